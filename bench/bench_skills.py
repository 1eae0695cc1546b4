"""Skills benchmark: 300 generated skills, cold load, warm rescan, one change, matching and prompt."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from openclaw_mini.skills import SkillLoader, match_skill, render_skills_prompt

COUNT = 300


def _write_skills(root: Path, count: int) -> None:
    for index in range(count):
        folder = root / f"skill-{index:03d}"
        folder.mkdir(parents=True)
        if index % 2:
            front = (
                f"name: skill-{index:03d}\n"
                f"description: Generated OpenClaw-form skill number {index} for the benchmark.\n"
                "metadata:\n"
                '  { "openclaw": { "emoji": "🧪", "requires": { "bins": ["sh"], "env": ["HOME"] },\n'
                '      "install": [{ "id": "brew", "kind": "brew", "bins": ["sh"], },], }, }\n'
            )
        else:
            front = (
                f"id: skill-{index:03d}\n"
                f"description: Generated mini-form skill number {index} for the benchmark.\n"
                f'triggers: ["/s{index}", "技能{index}"]\n'
            )
        body = f"# Skill {index}\n\n" + "Step: do the thing carefully.\n" * 40
        (folder / "SKILL.md").write_text(f"---\n{front}---\n{body}", encoding="utf-8")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def run() -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        workspace = base / "ws"
        _write_skills(workspace / "skills", COUNT)
        options = {"user_dir": base / "user", "bundled_dir": base / "bundled"}

        start = time.perf_counter()
        loader = SkillLoader(workspace, **options)  # type: ignore[arg-type]
        snapshot = loader.load()
        cold = time.perf_counter() - start
        assert len(snapshot.skills) == COUNT and not snapshot.warnings

        warm_times = []
        for _ in range(50):
            start = time.perf_counter()
            again = loader.load()
            warm_times.append(time.perf_counter() - start)
        assert again is snapshot

        target = workspace / "skills" / "skill-150" / "SKILL.md"
        target.write_text("---\nid: skill-150\ndescription: changed\n---\nNew body\n", encoding="utf-8")
        stamp = target.stat().st_mtime + 5
        os.utime(target, (stamp, stamp))
        start = time.perf_counter()
        changed = loader.load()
        one_change = time.perf_counter() - start
        assert changed.get("skill-150").description == "changed"  # type: ignore[union-attr]

        messages = ("/s298 go", "技能42 现在", "hello there", "/skill-151 x")
        assert match_skill(changed, messages[0]) is not None and match_skill(changed, messages[2]) is None
        start = time.perf_counter()
        for _ in range(250):
            for message in messages:
                match_skill(changed, message)
        per_match = (time.perf_counter() - start) / (250 * len(messages))

        start = time.perf_counter()
        text, _warnings = render_skills_prompt(changed)  # first call renders; later calls are memoised
        render = time.perf_counter() - start

    return [
        (f"skills: cold load of {COUNT} skills", _ms(cold), "< 500 ms"),
        (
            f"skills: warm load, nothing changed (median of 50, {COUNT} skills)",
            _ms(statistics.median(warm_times)),
            "< 5 ms",
        ),
        ("skills: load after one SKILL.md changed", _ms(one_change), "< 20 ms"),
        ("skills: match_skill (mean over 1,000 messages)", _ms(per_match), "< 1 ms"),
        (f"skills: render_skills_prompt, first call ({len(text):,} chars)", _ms(render), "< 10 ms"),
    ]


if __name__ == "__main__":
    for name, result, goal in run():
        print(f"{name:<62} {result:>12}   goal {goal}")
