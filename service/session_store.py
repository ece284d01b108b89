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
    owner: str  # the tenant that made it: the full sha256 digest of its API key, or auth.NO_AUTH_TENANT
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

    def _at_version(self, session_id: str, expected_version: int) -> StoredSession:
        """The live session, if it is still at the version its writer last saw (one writer per version)."""
        s = self._live(session_id)
        if s is None:
            raise KeyError(session_id)
        if s.record.version != expected_version:
            raise VersionConflict(f"session {session_id} is at version {s.record.version}, not {expected_version}")
        return s

    async def write(self, session_id, expected_version, header, puts, deletes, ttl, replace=False):
        async with self._lock:
            s = self._at_version(session_id, expected_version)
            entries = {} if replace else s.entries
            entries.update(puts)
            for k in deletes:
                entries.pop(k, None)
            s.record.version += 1
            self._data[session_id] = (time.monotonic() + ttl, StoredSession(s.record, header, entries))
            return s.record.version

    async def claim(self, session_id, expected_version):
        async with self._lock:
            s = self._at_version(session_id, expected_version)
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


# The scripts below are a session's transactions: Lua runs atomically and, the keys sharing one hash
# slot, on one Redis Cluster node (redis-py's cluster pipelines are no substitute for MULTI/EXEC).

# KEYS: meta, header, entries. ARGV: ttl, header, n_meta, then n_meta (field, value) pairs, then entry pairs.
# The meta fields include n_entries, the entry count every write keeps, so that a load or a write notices an
# entry key that is gone or partial (an eviction under allkeys-lru).
_CREATE_LUA = """
local ttl = tonumber(ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl)
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('EXPIRE', KEYS[1], ttl)
while i <= #ARGV do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ttl) end
return 1
"""

# KEYS: meta, header, entries. One consistent snapshot: {meta fields, header or false, entry fields}.
_LOAD_LUA = """
return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[3])}
"""

# KEYS: meta, header, entries. ARGV: expected version, ttl, header, replace flag, n_puts,
# then n_puts (field, value) pairs, then the fields to delete. -1 gone, -2 moved on, -3 incomplete (a key of
# the session evicted: only a full rewrite, replace flag '1', is accepted), else the new version.
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


def connect(url: str, **options):
    """A redis-py asyncio client for a session-store URL:

    - `redis://[[user]:password@]host:port/db`, `rediss://...` (TLS), `unix://`: one server;
    - `redis+sentinel://[[user]:password@]host:port[,host:port...]/<master name>[/db]` (`rediss+sentinel://`
      for TLS): the master the Sentinels name, followed through failovers; the password is the master's,
      `?sentinel_password=` the Sentinels' if they have one;
    - `redis+cluster://[[user]:password@]host:port[,host:port...]` (`rediss+cluster://`): a Redis Cluster,
      reached through any of its nodes.

    Other query parameters go to the connections (e.g. `?ssl_ca_certs=/etc/redis/ca.pem` for a private CA).
    """
    from urllib.parse import parse_qsl, unquote, urlsplit

    import redis.asyncio as redis

    scheme, _, _ = url.partition("://")
    if scheme in ("redis", "rediss", "unix"):
        return redis.from_url(url, **options)
    base, _, kind = scheme.partition("+")
    if base not in ("redis", "rediss") or kind not in ("sentinel", "cluster"):
        raise ValueError(f"unknown session store URL scheme {scheme!r}: redis, rediss, redis+sentinel, "
                         "rediss+sentinel, redis+cluster or rediss+cluster")
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    auth = {"username": unquote(username) or None, "password": unquote(password) or None}
    hosts = []
    for host in hostlist.split(","):
        name, _, port = host.rpartition(":")
        hosts.append((name, int(port)))
    query = dict(parse_qsl(parts.query))
    tls = {"ssl": True, **{k: query.pop(k) for k in list(query) if k.startswith("ssl_")}} if base == "rediss" else {}
    if kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        options.pop("health_check_interval", None)
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], **auth, **tls, **query, **options)
    from redis.asyncio.sentinel import Sentinel

    service, _, db = parts.path.strip("/").partition("/")
    if not service:
        raise ValueError("a redis+sentinel:// URL names the master after the hosts: .../<master name>[/db]")
    timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel = Sentinel(hosts, sentinel_kwargs={"password": query.pop("sentinel_password", None), **timeouts, **tls})
    return sentinel.master_for(service, db=int(db or 0), **auth, **tls, **query, **options)


def _is_oom(message: str) -> bool:
    """An OOM refusal, also as a script's error (which older servers wrap in "ERR Error running script")."""
    return message.startswith("OOM") or "OOM command not allowed" in message


def _pairs(flat: list) -> dict:
    """HGETALL's reply inside a Lua script: a flat [field, value, ...] list."""
    return dict(zip(flat[::2], flat[1::2]))


class RedisStore(SessionStore):
    """Sessions in Redis (redis-py asyncio): one server, Sentinel or Cluster (`connect`); any replica can
    resume a session another one wrote. A session's keys share one hash slot ({session id}), so its
    transactions and its write script run on one Cluster node; the per-owner index is written on its own."""

    def __init__(self, url: str, prefix: str = "sam2", socket_timeout: float = 2.0) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis = connect(url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
                              retry=Retry(NoBackoff(), 0), health_check_interval=10)
        self._prefix = prefix

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
                if isinstance(exc, (rexc.OutOfMemoryError, rexc.ExecAbortError)) or _is_oom(str(exc)):
                    raise StoreUnavailable(f"session store (Redis) refused the write: {exc}") from exc
                raise

    async def create(self, record, header, entries, ttl):
        fields = {**record.to_fields(), "n_entries": str(len(entries))}
        args = [ttl, header, len(fields), *(x for kv in fields.items() for x in kv),
                *(x for kv in entries.items() for x in kv)]
        await self._call(lambda: self._redis.eval(_CREATE_LUA, 3, *self._keys(record.session_id), *args))
        await self.touch_owner(record.owner, record.session_id, ttl)

    async def write(self, session_id, expected_version, header, puts, deletes, ttl, replace=False):
        args = [expected_version, ttl, header, "1" if replace else "0", len(puts)]
        for k, v in puts.items():
            args += [k, v]
        args += list(deletes)
        result = await self._call(lambda: self._redis.eval(_WRITE_LUA, 3, *self._keys(session_id), *args))
        if result == -1:
            raise KeyError(session_id)
        if result == -2:
            raise VersionConflict(f"session {session_id} moved past version {expected_version}")
        if result == -3:
            raise IncompleteSession(session_id)
        return int(result)

    async def claim(self, session_id, expected_version):
        meta = self._keys(session_id)[0]
        result = await self._call(lambda: self._redis.eval(_CLAIM_LUA, 1, meta, expected_version))
        if result == -1:
            raise KeyError(session_id)
        if result == -2:
            raise VersionConflict(f"session {session_id} moved past version {expected_version}")
        return int(result)

    async def load(self, session_id):
        fields, header, entries = await self._call(lambda: self._redis.eval(_LOAD_LUA, 3, *self._keys(session_id)))
        if not fields:
            return None
        fields, entries = _pairs(fields), _pairs(entries)
        n_entries = fields.get(b"n_entries")
        if header is None or (n_entries is not None and int(n_entries) != len(entries)):
            raise IncompleteSession(session_id)
        return StoredSession(SessionRecord.from_fields(fields), header, {k.decode(): v for k, v in entries.items()})

    async def delete(self, session_id):
        meta = self._keys(session_id)[0]
        owner = await self._call(lambda: self._redis.hget(meta, "owner"))  # not load(): an incomplete one goes too
        await self._call(lambda: self._redis.delete(*self._keys(session_id)))
        if owner is not None:
            await self._call(lambda: self._redis.zrem(self._owner_key(owner.decode()), session_id))

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
