"""The distributed backend: Redis Streams with a consumer group, plus small Lua scripts for atomicity.

Layout (prefix `ocm:`): a list per conversation is its inbox (FIFO); a `ready:<band>` stream holds one
token per conversation whose head may run, read by the `workers` consumer group, so holding a token's
pending entry is the conversation's lease (renewed with `XCLAIM ... JUSTID`, taken over with
`XAUTOCLAIM` after the lease); a lease hash carries the lease id that fences late workers. Scripts make
"finish, then wake the next message" atomic against a concurrent enqueue (else a lost wake-up). Due
retries wait in a sorted set; dead letters in another. Times are the Redis server's clock.
All keys of one fleet are touched by the same scripts: this needs one Redis (with replicas), not Cluster.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import FleetError, FleetUnavailable, MessageNotFound, StaleLease, StoreConflict, UnknownAgent
from .models import (
    Backlog,
    Claim,
    FileChange,
    FileMeta,
    FleetStatus,
    HeartbeatDelivery,
    HeartbeatEntry,
    Message,
    MessageResult,
    RetryPolicy,
    StreamBacklog,
    TurnEvent,
    WorkerInfo,
    priority_band,
)
from .queue import EVENT_TTL_SECONDS, Queue, redact_url

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisQueue"]

GROUP = "workers"
BANDS = (0, 1, 2)
RESULT_TTL_SECONDS = 7 * 24 * 3600
"""Finished messages and idempotency keys are kept a week, then expire."""

_COMMON = r"""
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function wake(cid)
  local head = redis.call('LINDEX', P .. 'c:' .. cid, 0)
  if not head then return end
  local band = redis.call('HGET', P .. 'm:' .. head, 'band')
  redis.call('HSET', P .. 'm:' .. head, 'state', 'queued')
  redis.call('XADD', P .. 'ready:' .. band, '*', 'c', cid)
end
local function end_lease(cid)
  local l = P .. 'l:' .. cid
  local entry = redis.call('HGET', l, 'entry')
  local band = redis.call('HGET', l, 'band')
  if entry then
    redis.call('XACK', P .. 'ready:' .. band, 'workers', entry)
    redis.call('XDEL', P .. 'ready:' .. band, entry)
  end
  redis.call('DEL', l)
  redis.call('SREM', P .. 'leased', cid)
end
local function fail_lease(cid, err, retryable, r, base_ms, factor, max_ms, max_attempts, now)
  local l = P .. 'l:' .. cid
  local id = redis.call('HGET', l, 'msg')
  local worker = redis.call('HGET', l, 'worker')
  local m = P .. 'm:' .. id
  local attempts = tonumber(redis.call('HGET', m, 'attempts'))
  local crash = retryable == 2
  if crash then retryable = 1 end
  end_lease(cid)
  if retryable == 1 and attempts < max_attempts then
    local due = now
    if not (crash and attempts == 1) then
      local ceiling = math.min(max_ms, base_ms * factor ^ math.max(0, attempts - 1))
      due = now + math.floor(ceiling * r)
    end
    redis.call('HSET', m, 'state', 'delayed', 'error', err, 'not_before', due, 'worker', worker)
    redis.call('ZADD', P .. 'delayed', due, cid)
    return 'delayed'
  end
  if retryable == 1 then
    local s = 's'
    if attempts == 1 then s = '' end
    err = err .. ' (gave up after ' .. attempts .. ' attempt' .. s .. ')'
  end
  redis.call('HSET', m, 'state', 'dead', 'error', err, 'finished_at', now, 'worker', worker)
  redis.call('LPOP', P .. 'c:' .. cid)
  redis.call('ZADD', P .. 'dead', now, id)
  redis.call('DECR', P .. 'open')
  wake(cid)
  return 'dead'
end
local function take(cid, entry, band, worker, lease_ms, lease_id, now)
  local head = redis.call('LINDEX', P .. 'c:' .. cid, 0)
  local l = P .. 'l:' .. cid
  if (not head) or redis.call('EXISTS', l) == 1 or redis.call('ZSCORE', P .. 'delayed', cid) then
    redis.call('XACK', P .. 'ready:' .. band, 'workers', entry)
    redis.call('XDEL', P .. 'ready:' .. band, entry)
    return false
  end
  local m = P .. 'm:' .. head
  local attempts = redis.call('HINCRBY', m, 'attempts', 1)
  local expires = now + lease_ms
  redis.call('HSET', m, 'state', 'leased', 'worker', worker)
  redis.call('HSET', l, 'id', lease_id, 'msg', head, 'entry', entry, 'band', band, 'worker', worker,
             'expires', expires)
  redis.call('SADD', P .. 'leased', cid)
  return {head, attempts, expires, redis.call('HGET', m, 'json')}
end
"""

_ENQUEUE = (
    _COMMON
    + r"""
local id, agent, cid, band, idem, json, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if idem ~= '' then
  local existing = redis.call('GET', P .. 'idem:' .. idem)
  if existing then return {existing, 0, redis.call('HGET', P .. 'm:' .. existing, 'json') or ''} end
end
if redis.call('SCARD', P .. 'agents') > 0 and redis.call('SISMEMBER', P .. 'agents', agent) == 0 then
  return {'', -1, ''}
end
local now = now_ms()
json = string.gsub(json, '"enqueued_at":%-1%.0', '"enqueued_at":' .. (now / 1000), 1)
redis.call('HSET', P .. 'm:' .. id, 'json', json, 'cid', cid, 'band', band, 'state', 'queued',
           'attempts', 0, 'enqueued_at', now)
if idem ~= '' then redis.call('SET', P .. 'idem:' .. idem, id, 'EX', ttl) end
redis.call('INCR', P .. 'open')
if redis.call('RPUSH', P .. 'c:' .. cid, id) == 1 then wake(cid) end
return {id, 1, json}
"""
)

_TAKE = (
    _COMMON
    + r"""
return take(ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], now_ms())
"""
)

_RECOVER = (
    _COMMON
    + r"""
local cid, entry, band, worker = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease_ms, lease_id = tonumber(ARGV[6]), ARGV[7]
local now = now_ms()
local l = P .. 'l:' .. cid
if redis.call('EXISTS', l) == 0 then
  return take(cid, entry, band, worker, lease_ms, lease_id, now)
end
if redis.call('HGET', l, 'entry') ~= entry then
  redis.call('XACK', P .. 'ready:' .. band, 'workers', entry)
  redis.call('XDEL', P .. 'ready:' .. band, entry)
  return false
end
if tonumber(redis.call('HGET', l, 'expires')) > now then return false end
local err = 'lease expired: worker ' .. redis.call('HGET', l, 'worker')
  .. ' stopped renewing (crashed or lost)'
fail_lease(cid, err, 2, tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11]),
           tonumber(ARGV[12]), now)
return false
"""
)

_RENEW = (
    _COMMON
    + r"""
local cid, lease_id, lease_ms = ARGV[2], ARGV[3], tonumber(ARGV[4])
local l = P .. 'l:' .. cid
if redis.call('HGET', l, 'id') ~= lease_id then return -1 end
local expires = now_ms() + lease_ms
redis.call('HSET', l, 'expires', expires)
local band, worker = redis.call('HGET', l, 'band'), redis.call('HGET', l, 'worker')
local entry = redis.call('HGET', l, 'entry')
redis.call('XCLAIM', P .. 'ready:' .. band, 'workers', worker, 0, entry, 'JUSTID')
return expires
"""
)

_COMPLETE = (
    _COMMON
    + r"""
local cid, lease_id, agent, text, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local l = P .. 'l:' .. cid
if redis.call('HGET', l, 'id') ~= lease_id then return {-1} end
local a = P .. 'a:' .. agent
local meta, data, ver = a .. ':meta', a .. ':data', a .. ':v'
local conflicts = {}
local i = 7
while i <= #ARGV do
  local path, kind, base = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if kind ~= 'append' then
    local current = redis.call('HGET', meta, path)
    local v = 0
    if current then v = tonumber(string.match(current, '^(%d+)')) end
    if v ~= base then table.insert(conflicts, path) end
  end
  i = i + 4
end
if #conflicts > 0 then return {-2, unpack(conflicts)} end
i = 7
while i <= #ARGV do
  local path, kind, body = ARGV[i], ARGV[i + 1], ARGV[i + 3]
  local v = redis.call('INCR', ver)
  if kind == 'delete' then
    redis.call('HDEL', meta, path)
    redis.call('HDEL', data, path)
  else
    if kind == 'append' then body = (redis.call('HGET', data, path) or '') .. body end
    redis.call('HSET', data, path, body)
    redis.call('HSET', meta, path, v .. ':' .. redis.sha1hex(body) .. ':' .. string.len(body))
  end
  i = i + 4
end
local now = now_ms()
local id = redis.call('HGET', l, 'msg')
local m = P .. 'm:' .. id
redis.call('HSET', m, 'state', 'done', 'result', text, 'worker', redis.call('HGET', l, 'worker'),
           'finished_at', now)
redis.call('HDEL', m, 'error')
redis.call('EXPIRE', m, ttl)
redis.call('LPOP', P .. 'c:' .. cid)
redis.call('DECR', P .. 'open')
end_lease(cid)
wake(cid)
return {1}
"""
)

_FAIL = (
    _COMMON
    + r"""
local cid, lease_id = ARGV[2], ARGV[3]
if redis.call('HGET', P .. 'l:' .. cid, 'id') ~= lease_id then return false end
return fail_lease(cid, ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
                  tonumber(ARGV[9]), tonumber(ARGV[10]), now_ms())
"""
)

_RELEASE = (
    _COMMON
    + r"""
local cid, lease_id = ARGV[2], ARGV[3]
local l = P .. 'l:' .. cid
if redis.call('HGET', l, 'id') ~= lease_id then return 0 end
local m = P .. 'm:' .. redis.call('HGET', l, 'msg')
if tonumber(redis.call('HGET', m, 'attempts')) > 0 then redis.call('HINCRBY', m, 'attempts', -1) end
end_lease(cid)
wake(cid)
return 1
"""
)

_PROMOTE = (
    _COMMON
    + r"""
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
for _, cid in ipairs(due) do
  redis.call('ZREM', P .. 'delayed', cid)
  wake(cid)
end
return #due
"""
)

_RETRY_DEAD = (
    _COMMON
    + r"""
local id = ARGV[2]
if not redis.call('ZSCORE', P .. 'dead', id) then return 0 end
local m = P .. 'm:' .. id
local cid = redis.call('HGET', m, 'cid')
redis.call('ZREM', P .. 'dead', id)
redis.call('HSET', m, 'state', 'queued', 'attempts', 0)
redis.call('HDEL', m, 'error', 'finished_at', 'not_before')
redis.call('INCR', P .. 'open')
if redis.call('RPUSH', P .. 'c:' .. cid, id) == 1 then wake(cid) end
return 1
"""
)

_STATUS = (
    _COMMON
    + r"""
local open = tonumber(redis.call('GET', P .. 'open') or '0')
local in_flight = redis.call('SCARD', P .. 'leased')
local delayed = redis.call('ZCARD', P .. 'delayed')
return {open - in_flight - delayed, in_flight, delayed, redis.call('ZCARD', P .. 'dead'), now_ms(),
        redis.call('HGETALL', P .. 'workers'), redis.call('HGETALL', P .. 'heartbeats')}
"""
)

_HEARTBEAT = (
    _COMMON
    + r"""
local now = now_ms()
redis.call('HSET', P .. 'workers', ARGV[2], ARGV[3])
redis.call('HSET', P .. 'heartbeats', ARGV[2], now)
for i = 4, #ARGV do redis.call('SADD', P .. 'agents', ARGV[i]) end
return now
"""
)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _meta(raw: Any) -> FileMeta:
    version, digest, size = _s(raw).split(":")
    return FileMeta(version=int(version), digest=digest, size=int(size))


_HB_SCHEDULE = r"""
local P = ARGV[1]
local agent, expected, due, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('ZSCORE', P .. 'hb:due', agent)
if expected == '' then
  if current then return 0 end
elseif (not current) or tonumber(current) ~= tonumber(expected) then
  return 0
end
redis.call('ZADD', P .. 'hb:due', due, agent)
redis.call('HSET', P .. 'hb:reason', agent, reason)
return 1
"""
"""Compare-and-set of an agent's next heartbeat slot (scores are integer milliseconds: exact)."""
HB_DELIVERIES_KEEP = 10_000


class RedisQueue(Queue):
    """`Queue` on Redis Streams; `await RedisQueue.connect("redis://127.0.0.1:6379/0")`."""

    def __init__(self, client: Redis, *, url: str, retry: RetryPolicy, prefix: str = "ocm:") -> None:
        self.client = client
        self.url = url
        """For display: the password, if any, is redacted."""
        self.retry = retry
        self.prefix = prefix
        self._rng = random.Random()
        self._groups_ready = False
        self._last_recover = 0.0
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "enqueue": _ENQUEUE,
                "take": _TAKE,
                "recover": _RECOVER,
                "renew": _RENEW,
                "complete": _COMPLETE,
                "fail": _FAIL,
                "release": _RELEASE,
                "promote": _PROMOTE,
                "retry_dead": _RETRY_DEAD,
                "status": _STATUS,
                "heartbeat": _HEARTBEAT,
                "hb_schedule": _HB_SCHEDULE,
            }.items()
        }

    @classmethod
    async def connect(cls, url: str, *, retry: RetryPolicy | None = None, prefix: str = "ocm:") -> RedisQueue:
        """Connect and check the server answers; `FleetUnavailable` (with the URL) when it does not."""
        from redis.asyncio import Redis

        client = Redis.from_url(url, decode_responses=False, socket_connect_timeout=5, socket_timeout=15)
        queue = cls(client, url=redact_url(url), retry=retry or RetryPolicy(), prefix=prefix)
        try:
            await queue._call(client.ping())
            await queue._ensure_groups()
        except BaseException:
            await client.aclose()
            raise
        return queue

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, awaitable: Any) -> Any:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            return await awaitable
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise FleetUnavailable(f"cannot reach Redis at {self.url}: {exc}") from exc
        except RedisError as exc:
            if "LOADING" in str(exc) or "BUSYGROUP" in str(exc):
                raise FleetUnavailable(f"Redis at {self.url} is not ready: {exc}") from exc
            raise FleetError(f"Redis at {self.url} refused a fleet command: {exc}") from exc

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._call(self._scripts[name](keys=[], args=[self.prefix, *args]))

    async def _ensure_groups(self) -> None:
        from redis.exceptions import ResponseError

        for band in BANDS:
            try:
                await self.client.xgroup_create(self._ready(band), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise FleetError(f"cannot create the consumer group on {self.url}: {exc}") from exc
        self._groups_ready = True

    def _ready(self, band: int) -> str:
        return f"{self.prefix}ready:{band}"

    def _backoff_args(self) -> list[Any]:
        r = self.retry
        return [
            self._rng.uniform(0.5, 1.0),
            int(r.base_delay * 1000),
            r.factor,
            int(r.max_delay * 1000),
            r.max_attempts,
        ]

    # -- messages ------------------------------------------------------------------------------
    async def _enqueue(
        self, agent: str, conversation: str, text: str, priority: int, idempotency_key: str | None
    ) -> tuple[Message, bool]:
        draft = Message(
            id="m-" + uuid.uuid4().hex[:20],
            agent=agent,
            conversation=conversation,
            text=text,
            priority=priority,
            idempotency_key=idempotency_key,
            enqueued_at=-1,  # the script writes the server's clock here
        )
        message_id, created, stored = await self._run(
            "enqueue",
            draft.id,
            agent,
            f"{agent}/{conversation}",
            priority_band(priority),
            idempotency_key or "",
            draft.model_dump_json(),
            RESULT_TTL_SECONDS,
        )
        if created == -1:
            known = sorted(
                _s(name) for name in await self._call(self.client.smembers(self.prefix + "agents"))
            )
            raise UnknownAgent(f"unknown agent {agent!r}: the fleet's workers serve {known}")
        if not stored:  # the first message of that key expired meanwhile
            raise MessageNotFound(f"idempotency key {idempotency_key!r} names message {_s(message_id)}, gone")
        return Message.model_validate_json(stored), bool(created)

    async def _promote(self) -> None:
        await self._run("promote", 1000)

    async def _recover(self, worker_id: str, lease_seconds: float, limit: int) -> list[Claim]:
        """Take over tokens whose owner stopped renewing for a lease (`XAUTOCLAIM`)."""
        claims: list[Claim] = []
        lease_ms = int(lease_seconds * 1000)
        for band in BANDS:
            reply = await self._call(
                self.client.xautoclaim(self._ready(band), GROUP, worker_id, lease_ms, "0-0", count=100)
            )
            for entry_id, fields in reply[1]:
                if not fields:
                    continue
                cid = _s(fields[b"c"])
                lease_id = uuid.uuid4().hex
                taken = await self._run(
                    "recover", cid, _s(entry_id), band, worker_id, lease_ms, lease_id, *self._backoff_args()
                )
                if taken:
                    claim = self._claim(taken, lease_id)
                    if len(claims) < limit:
                        claims.append(claim)
                    else:
                        await self.release(claim)
        return claims

    def _claim(self, taken: list[Any], lease_id: str) -> Claim:
        _, attempts, expires, stored = taken
        return Claim(
            message=Message.model_validate_json(stored),
            lease_id=lease_id,
            attempt=int(attempts),
            expires_at=int(expires) / 1000,
        )

    async def claim(self, worker_id: str, *, lease_seconds: float, limit: int = 1) -> list[Claim]:
        if not self._groups_ready:
            await self._ensure_groups()
        await self._promote()
        claims: list[Claim] = []
        now = time.monotonic()
        if now - self._last_recover >= min(1.0, lease_seconds / 4):
            self._last_recover = now
            claims.extend(await self._recover(worker_id, lease_seconds, limit))
        lease_ms = int(lease_seconds * 1000)
        for band in BANDS:
            want = limit - len(claims)
            if want <= 0:
                break
            reply = await self._call(
                self.client.xreadgroup(GROUP, worker_id, {self._ready(band): ">"}, count=want)
            )
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    lease_id = uuid.uuid4().hex
                    taken = await self._run(
                        "take", _s(fields[b"c"]), _s(entry_id), band, worker_id, lease_ms, lease_id
                    )
                    if taken:
                        claims.append(self._claim(taken, lease_id))
        return claims

    def _cid(self, claim: Claim) -> str:
        return f"{claim.message.agent}/{claim.message.conversation}"

    def _stale(self, claim: Claim) -> StaleLease:
        return StaleLease(
            f"lease {claim.lease_id} on message {claim.message.id} is no longer held "
            "(it expired and was taken over, or the message was finished)"
        )

    async def renew(self, claim: Claim, *, lease_seconds: float) -> float:
        expires = await self._run("renew", self._cid(claim), claim.lease_id, int(lease_seconds * 1000))
        if int(expires) < 0:
            raise self._stale(claim)
        return int(expires) / 1000

    async def complete(self, claim: Claim, text: str, changes: Sequence[FileChange] = ()) -> None:
        args: list[Any] = [self._cid(claim), claim.lease_id, claim.message.agent, text, RESULT_TTL_SECONDS]
        for change in changes:
            args.extend([change.path, change.kind, change.base_version, change.data])
        reply = await self._run("complete", *args)
        code = int(reply[0])
        if code == -1:
            raise self._stale(claim)
        if code == -2:
            paths = [_s(p) for p in reply[1:]]
            raise StoreConflict(
                f"agent {claim.message.agent!r}: {', '.join(paths)} changed in the store since this turn "
                "read (another conversation wrote it); nothing was overwritten",
                paths=paths,
            )

    async def fail(self, claim: Claim, error: str, *, retryable: bool = True) -> MessageResult:
        outcome = await self._run(
            "fail", self._cid(claim), claim.lease_id, error, int(retryable), *self._backoff_args()
        )
        if not outcome:
            raise self._stale(claim)
        return await self.message(claim.message.id)

    async def release(self, claim: Claim) -> None:
        if not int(await self._run("release", self._cid(claim), claim.lease_id)):
            raise self._stale(claim)

    async def message(self, message_id: str) -> MessageResult:
        raw = await self._call(self.client.hgetall(f"{self.prefix}m:{message_id}"))
        if not raw:
            raise MessageNotFound(f"no message with id {message_id!r} in {self.url}")
        return _result(raw, time.time())

    # -- operations ----------------------------------------------------------------------------
    async def status(self) -> FleetStatus:
        queued, in_flight, delayed, dead, now_ms, workers_raw, beats_raw = await self._run("status")
        beats = {_s(beats_raw[i]): int(beats_raw[i + 1]) / 1000 for i in range(0, len(beats_raw), 2)}
        now = int(now_ms) / 1000
        workers = []
        for i in range(0, len(workers_raw), 2):
            info = WorkerInfo.model_validate_json(workers_raw[i + 1])
            info = info.model_copy(update={"heartbeat_at": beats.get(info.id, info.heartbeat_at)})
            stale = now - info.heartbeat_at > 3 * max(info.lease_seconds / 3, 1.0)
            workers.append(info.model_copy(update={"lost": info.state != "stopped" and stale}))
        return FleetStatus(
            queued=max(0, int(queued)),
            in_flight=int(in_flight),
            delayed=int(delayed),
            dead_letters=int(dead),
            workers=sorted(workers, key=lambda w: w.id),
        )

    async def dead_letters(self, limit: int = 100) -> list[MessageResult]:
        ids = await self._call(self.client.zrange(self.prefix + "dead", 0, limit - 1))
        found = []
        for raw_id in ids:
            try:
                found.append(await self.message(_s(raw_id)))
            except MessageNotFound:
                continue
        return found

    async def retry_dead(self, message_id: str) -> MessageResult:
        if not int(await self._run("retry_dead", message_id)):
            raise MessageNotFound(f"no dead letter with id {message_id!r} in {self.url}")
        return await self.message(message_id)

    async def drop_dead(self, message_id: str) -> None:
        removed = await self._call(self.client.zrem(self.prefix + "dead", message_id))
        if not removed:
            raise MessageNotFound(f"no dead letter with id {message_id!r} in {self.url}")
        await self._call(self.client.delete(f"{self.prefix}m:{message_id}"))

    # -- workers -------------------------------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo) -> WorkerInfo:
        now_ms = await self._run("heartbeat", info.id, info.model_dump_json(), *info.agents)
        return info.model_copy(update={"heartbeat_at": int(now_ms) / 1000, "lost": False})

    async def remove_worker(self, worker_id: str) -> None:
        await self._call(self.client.hdel(self.prefix + "workers", worker_id))
        await self._call(self.client.hdel(self.prefix + "heartbeats", worker_id))

    async def known_agents(self) -> set[str]:
        return {_s(name) for name in await self._call(self.client.smembers(self.prefix + "agents"))}

    # -- agent files ---------------------------------------------------------------------------
    def _akey(self, agent: str, part: str) -> str:
        return f"{self.prefix}a:{agent}:{part}"

    async def agent_version(self, agent: str) -> int:
        return int(await self._call(self.client.get(self._akey(agent, "v"))) or 0)

    async def manifest(self, agent: str) -> tuple[int, dict[str, FileMeta]]:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self._akey(agent, "v"))
            pipe.hgetall(self._akey(agent, "meta"))
            version, raw = await self._call(pipe.execute())
        return int(version or 0), {_s(path): _meta(meta) for path, meta in raw.items()}

    async def fetch_files(self, agent: str, paths: Sequence[str]) -> dict[str, tuple[FileMeta, bytes]]:
        if not paths:
            return {}
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(self._akey(agent, "meta"), list(paths))
            pipe.hmget(self._akey(agent, "data"), list(paths))
            metas, datas = await self._call(pipe.execute())
        return {
            path: (_meta(meta), bytes(data))
            for path, meta, data in zip(paths, metas, datas, strict=True)
            if meta is not None and data is not None
        }

    async def file_meta(self, agent: str, path: str) -> FileMeta | None:
        raw = await self._call(self.client.hget(self._akey(agent, "meta"), path))
        return None if raw is None else _meta(raw)

    # -- heartbeat schedule --------------------------------------------------------------------
    async def schedule_heartbeat(
        self, agent: str, due: float, reason: str, *, expected: float | None
    ) -> bool:
        previous = "" if expected is None else str(round(expected * 1000))
        return bool(int(await self._run("hb_schedule", agent, previous, round(due * 1000), reason)))

    async def _entries(self, pairs: list[Any]) -> list[HeartbeatEntry]:
        if not pairs:
            return []
        names = [_s(name) for name, _ in pairs]
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.prefix + "hb:reason", names)
            pipe.hmget(self.prefix + "hb:last", names)
            reasons, lasts = await self._call(pipe.execute())
        entries = []
        for (name, score), reason, last in zip(pairs, reasons, lasts, strict=True):
            extra = HeartbeatEntry.model_validate_json(last).model_dump() if last else {}
            extra.update(agent=_s(name), due=int(score) / 1000, reason=_s(reason) if reason else "interval")
            entries.append(HeartbeatEntry(**extra))
        return entries

    async def due_heartbeats(self, now: float, limit: int = 500, offset: int = 0) -> list[HeartbeatEntry]:
        pairs = await self._call(
            self.client.zrangebyscore(
                self.prefix + "hb:due", "-inf", round(now * 1000), start=offset, num=limit, withscores=True
            )
        )
        return await self._entries(pairs)

    async def heartbeat_schedule(self) -> list[HeartbeatEntry]:
        pairs = await self._call(self.client.zrange(self.prefix + "hb:due", 0, -1, withscores=True))
        return sorted(await self._entries(pairs), key=lambda e: e.agent)

    async def unschedule_heartbeat(self, agent: str) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.prefix + "hb:due", agent)
            pipe.hdel(self.prefix + "hb:reason", agent)
            await self._call(pipe.execute())

    async def record_heartbeat(self, agent: str, slot: float, outcome: str) -> None:
        record = HeartbeatEntry(agent=agent, due=0, last_slot=slot, last_outcome=outcome)
        await self._call(self.client.hset(self.prefix + "hb:last", agent, record.model_dump_json()))

    async def log_heartbeat_delivery(self, delivery: HeartbeatDelivery) -> None:
        await self._call(
            self.client.xadd(
                self.prefix + "hb:deliveries",
                {"json": delivery.model_dump_json()},
                maxlen=HB_DELIVERIES_KEEP,
                approximate=True,
            )
        )

    async def heartbeat_deliveries(self, limit: int = 100) -> list[HeartbeatDelivery]:
        raw = await self._call(self.client.xrevrange(self.prefix + "hb:deliveries", count=limit))
        return [HeartbeatDelivery.model_validate_json(fields[b"json"]) for _, fields in reversed(raw)]

    # -- turn events and backlog -----------------------------------------------------------------
    def _events_key(self, message_id: str) -> str:
        return f"{self.prefix}ev:{message_id}"

    async def publish_events(self, message_id: str, events: Sequence[TurnEvent]) -> None:
        key = self._events_key(message_id)
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(key, {"e": event.model_dump_json(exclude={"id"}, exclude_none=True)})
        pipe.expire(key, EVENT_TTL_SECONDS)
        await self._call(pipe.execute())

    async def read_events(
        self, message_id: str, after: str = "", *, wait: float = 0.0, limit: int = 500
    ) -> list[TurnEvent]:
        key = self._events_key(message_id)
        block = int(min(wait, 10.0) * 1000) or None  # under the client's 15 s socket timeout
        reply = await self._call(self.client.xread({key: after or "0-0"}, count=limit, block=block))
        found = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                event = TurnEvent.model_validate_json(fields[b"e"])
                found.append(event.model_copy(update={"id": _s(entry_id)}))
        return found

    async def backlog(self) -> Backlog:
        streams = []
        for band in BANDS:
            groups = await self._call(self.client.xinfo_groups(self._ready(band)))
            for group in groups:
                if _s(group.get("name", b"")) != GROUP:
                    continue
                lag = group.get("lag")
                streams.append(
                    StreamBacklog(stream=self._ready(band), lag=int(lag or 0), pending=int(group["pending"]))
                )
        delayed = await self._call(self.client.zcard(self.prefix + "delayed"))
        return Backlog(
            waiting=sum(s.lag for s in streams),
            in_flight=sum(s.pending for s in streams),
            delayed=int(delayed),
            streams=streams,
        )


def _result(raw: dict[bytes, bytes], now: float) -> MessageResult:
    message = Message.model_validate_json(raw[b"json"])
    state = _s(raw.get(b"state", b"queued"))
    not_before = int(raw[b"not_before"]) / 1000 if b"not_before" in raw else None
    status: Any = {"done": "done", "dead": "dead_letter", "leased": "in_flight"}.get(state)
    if status is None:
        status = "delayed" if state == "delayed" else "queued"
    finished = raw.get(b"finished_at")
    return MessageResult(
        id=message.id,
        agent=message.agent,
        conversation=message.conversation,
        status=status,
        text=_s(raw[b"result"]) if b"result" in raw else None,
        error=_s(raw[b"error"]) if raw.get(b"error") else None,
        attempts=int(raw.get(b"attempts", 0)),
        worker_id=_s(raw[b"worker"]) if b"worker" in raw else None,
        enqueued_at=message.enqueued_at,
        finished_at=int(finished) / 1000 if finished else None,
        not_before=not_before if status == "delayed" else None,
    )
