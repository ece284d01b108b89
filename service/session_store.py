"""Where /v1/track sessions live between frames: in process (MemoryStore) or in Redis (RedisStore).

A session is a small record (owner, token hash, model, version), a header blob and one blob per memory
entry (see model_core.state_codec). Each step writes only its delta, atomically and versioned: a writer
whose version is stale is refused, and a reader never sees half a step. Every key has a TTL renewed by
activity. Values are raw bytes; nothing is pickled.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import dataclass


class StoreUnavailable(RuntimeError):
    """The store cannot be reached (e.g. Redis is down)."""


class VersionConflict(RuntimeError):
    """Another writer moved the session on (e.g. it was resumed elsewhere)."""


class IncompleteSession(KeyError):
    """Some of a session's keys are gone (e.g. Redis evicted one under `allkeys-lru`): it cannot be resumed, and
    a live writer must rewrite it in full."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class SessionRecord:
    """Who owns a session and what it runs; the token is kept only as its sha256."""

    session_id: str
    owner: str  # the API key's id (its hash prefix) or "anonymous"
    token_sha256: str
    model: str
    image_size: int
    created_at: float
    version: int = 0

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_sha256, token_hash(token))

    def to_fields(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.__dict__.items()}

    @classmethod
    def from_fields(cls, f: dict) -> "SessionRecord":
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in f.items()}
        return cls(f["session_id"], f["owner"], f["token_sha256"], f["model"], int(f["image_size"]),
                   float(f["created_at"]), int(f["version"]))


@dataclass
class StoredSession:
    record: SessionRecord
    header: bytes
    entries: dict[str, bytes]


class SessionStore:
    """Interface of the session stores."""

    async def create(self, record: SessionRecord, header: bytes, entries: dict[str, bytes], ttl: int) -> None:
        raise NotImplementedError

    async def write(self, session_id: str, expected_version: int, header: bytes, puts: dict[str, bytes],
                    deletes: list[str], ttl: int, replace: bool = False) -> int:
        """Apply one step (or, with replace=True, a full rewrite); returns the new version."""
        raise NotImplementedError

    async def claim(self, session_id: str, expected_version: int) -> int:
        """Take the session over (a resume): bump its version if it is still `expected_version`, so that every
        earlier writer is refused from now on; returns the new version."""
        raise NotImplementedError

    async def load(self, session_id: str) -> StoredSession | None:
        """The session, None if it does not exist; IncompleteSession if some of its keys are gone."""
        raise NotImplementedError

    async def delete(self, session_id: str) -> None:
        raise NotImplementedError

    async def count_owned(self, owner: str) -> int:
        raise NotImplementedError

    async def touch_owner(self, owner: str, session_id: str, ttl: int) -> None:
        """Keep a session counted against its owner's limit while it is alive."""

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass


class MemoryStore(SessionStore):
    """In-process store: the default single-replica setup, no Redis needed."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, StoredSession]] = {}
        self._lock = asyncio.Lock()

    def _live(self, session_id: str) -> StoredSession | None:
        item = self._data.get(session_id)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._data[session_id]
            return None
        return item[1]

    async def create(self, record, header, entries, ttl):
        async with self._lock:  # a copy: the caller's record must not be the stored one (one writer per version)
            stored = StoredSession(SessionRecord(**record.__dict__), header, dict(entries))
            self._data[record.session_id] = (time.monotonic() + ttl, stored)

    async def write(self, session_id, expected_version, header, puts, deletes, ttl, replace=False):
        async with self._lock:
            s = self._live(session_id)
            if s is None:
                raise KeyError(session_id)
            if s.record.version != expected_version:
                raise VersionConflict(f"session {session_id} is at version {s.record.version}, not {expected_version}")
            entries = {} if replace else s.entries
            entries.update(puts)
            for k in deletes:
                entries.pop(k, None)
            s.record.version += 1
            self._data[session_id] = (time.monotonic() + ttl, StoredSession(s.record, header, entries))
            return s.record.version

    async def claim(self, session_id, expected_version):
        async with self._lock:
            s = self._live(session_id)
            if s is None:
                raise KeyError(session_id)
            if s.record.version != expected_version:
                raise VersionConflict(f"session {session_id} is at version {s.record.version}, not {expected_version}")
            s.record.version += 1
            return s.record.version

    async def load(self, session_id):
        s = self._live(session_id)
        if s is None:
            return None
        return StoredSession(SessionRecord(**s.record.__dict__), s.header, dict(s.entries))

    async def delete(self, session_id):
        self._data.pop(session_id, None)

    async def count_owned(self, owner):
        return sum(1 for sid in list(self._data) if (s := self._live(sid)) is not None and s.record.owner == owner)


# KEYS: meta, header, entries, owner-index. ARGV: expected version, ttl, header, replace flag, n_puts,
# then n_puts (field, value) pairs, then the fields to delete.
_WRITE_LUA = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return -1 end
if tonumber(v) ~= tonumber(ARGV[1]) then return -2 end
local n_entries = redis.call('HGET', KEYS[1], 'n_entries')
if ARGV[4] ~= '1' and (redis.call('EXISTS', KEYS[2]) == 0
    or (n_entries and tonumber(n_entries) ~= redis.call('HLEN', KEYS[3]))) then return -3 end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) end
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[i])
  i = i + 1
end
local nv = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'n_entries', redis.call('HLEN', KEYS[3]))
redis.call('EXPIRE', KEYS[1], ttl)
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ttl) end
return nv
"""

# KEYS: meta. ARGV: expected version. A resume's takeover: -1 gone, -2 moved on, else the new version.
_CLAIM_LUA = """
local v = redis.call('HGET', KEYS[1], 'version')
if not v then return -1 end
if tonumber(v) ~= tonumber(ARGV[1]) then return -2 end
return redis.call('HINCRBY', KEYS[1], 'version', 1)
"""


class RedisStore(SessionStore):
    """Sessions in Redis (redis-py asyncio); any replica can resume a session another one wrote."""

    def __init__(self, url: str, prefix: str = "sam2", socket_timeout: float = 2.0) -> None:
        import redis.asyncio as redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis = redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                                     retry=Retry(NoBackoff(), 0), health_check_interval=10)
        self._prefix = prefix
        self._write = self._redis.register_script(_WRITE_LUA)
        self._claim = self._redis.register_script(_CLAIM_LUA)

    def _keys(self, sid: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:{{{sid}}}"  # hash tag: one Redis Cluster slot per session
        return f"{base}:meta", f"{base}:header", f"{base}:entries"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}:owner:{owner}"

    async def _call(self, make):
        """Await make() (a fresh command or pipeline each time); one retry covers a connection Redis closed
        (e.g. after a restart); a second failure means the store is unreachable."""
        import redis.exceptions as rexc

        for attempt in range(2):
            try:
                return await make()
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                if attempt:
                    raise StoreUnavailable(f"session store (Redis) unreachable: {exc}") from exc
            except rexc.ResponseError as exc:  # maxmemory with noeviction: the store cannot take writes
                if isinstance(exc, (rexc.OutOfMemoryError, rexc.ExecAbortError)) or str(exc).startswith("OOM"):
                    raise StoreUnavailable(f"session store (Redis) refused the write: {exc}") from exc
                raise

    async def create(self, record, header, entries, ttl):
        meta, hdr, ent = self._keys(record.session_id)

        def make():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(meta, mapping={**record.to_fields(), "n_entries": str(len(entries))})
            pipe.expire(meta, ttl)
            pipe.set(hdr, header, ex=ttl)
            pipe.delete(ent)
            if entries:
                pipe.hset(ent, mapping=entries)
                pipe.expire(ent, ttl)
            pipe.zadd(self._owner_key(record.owner), {record.session_id: time.time() + ttl})
            return pipe.execute()

        await self._call(make)

    async def write(self, session_id, expected_version, header, puts, deletes, ttl, replace=False):
        args = [expected_version, ttl, header, "1" if replace else "0", len(puts)]
        for k, v in puts.items():
            args += [k, v]
        args += list(deletes)
        result = await self._call(lambda: self._write(keys=list(self._keys(session_id)), args=args))
        if result == -1:
            raise KeyError(session_id)
        if result == -2:
            raise VersionConflict(f"session {session_id} moved past version {expected_version}")
        if result == -3:
            raise IncompleteSession(session_id)
        return int(result)

    async def claim(self, session_id, expected_version):
        meta = self._keys(session_id)[0]
        result = await self._call(lambda: self._claim(keys=[meta], args=[expected_version]))
        if result == -1:
            raise KeyError(session_id)
        if result == -2:
            raise VersionConflict(f"session {session_id} moved past version {expected_version}")
        return int(result)

    async def load(self, session_id):
        meta, hdr, ent = self._keys(session_id)

        def make():
            pipe = self._redis.pipeline(transaction=True)  # MULTI/EXEC: one consistent snapshot
            pipe.hgetall(meta)
            pipe.get(hdr)
            pipe.hgetall(ent)
            return pipe.execute()

        fields, header, entries = await self._call(make)
        if not fields:
            return None
        n_entries = fields.get(b"n_entries")
        if header is None or (n_entries is not None and int(n_entries) != len(entries or {})):
            raise IncompleteSession(session_id)
        return StoredSession(SessionRecord.from_fields(fields), header,
                             {k.decode(): v for k, v in (entries or {}).items()})

    async def delete(self, session_id):
        meta = self._keys(session_id)[0]
        owner = await self._call(lambda: self._redis.hget(meta, "owner"))

        def make():
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(*self._keys(session_id))
            if owner is not None:
                pipe.zrem(self._owner_key(owner.decode()), session_id)
            return pipe.execute()

        await self._call(make)

    async def count_owned(self, owner):
        key = self._owner_key(owner)
        await self._call(lambda: self._redis.zremrangebyscore(key, "-inf", time.time()))
        return int(await self._call(lambda: self._redis.zcard(key)))

    async def touch_owner(self, owner: str, session_id: str, ttl: int) -> None:
        await self._call(lambda: self._redis.zadd(self._owner_key(owner), {session_id: time.time() + ttl}))

    async def ping(self):
        try:
            return bool(await self._call(self._redis.ping))
        except StoreUnavailable:
            return False

    async def close(self):
        await self._redis.aclose()
