"""Opening a SQLite file that several threads and processes share: WAL, a busy timeout, one retry loop.

Used by the memory index and the embedded world state. WAL lets readers run beside the one
writer; `busy_timeout` makes writers queue on the database lock instead of failing. One case the
busy handler does not cover: two processes opening a brand-new file race to switch it to WAL, and
SQLite answers the loser "database is locked" at once. `open_wal` retries that (and a locked schema
set-up in `prepare`) with a growing pause until the busy timeout has passed.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["open_wal", "write_transaction"]


def open_wal(
    path: str | Path,
    *,
    busy_timeout: float,
    prepare: Callable[[sqlite3.Connection], None] | None = None,
    check_same_thread: bool = True,
) -> sqlite3.Connection:
    """A connection in autocommit mode (`isolation_level=None`) with WAL and `synchronous=NORMAL`.

    `prepare` runs on the new connection (schema checks and set-up); when it raises, the
    connection is closed and the error propagates, except "database is locked", which is retried
    like the WAL switch until `busy_timeout` seconds have passed.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.01
    while True:
        try:
            return _open_once(path, busy_timeout, prepare, check_same_thread)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _open_once(
    path: str | Path,
    busy_timeout: float,
    prepare: Callable[[sqlite3.Connection], None] | None,
    check_same_thread: bool,
) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=check_same_thread
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if prepare is not None:
            prepare(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back on any error (the writer lock is taken up front,
    so a read-then-write inside cannot fail half-way with "database is locked")."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
