"""Session stores: MemoryStore and RedisStore (a real redis-server) behave the same."""

import asyncio
import time

import pytest

from service.session_store import MemoryStore, RedisStore, SessionRecord, StoreUnavailable, VersionConflict
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(params=["memory", "redis"])
def store_factory(request, redis_server):
    return (lambda: MemoryStore()) if request.param == "memory" else (lambda: RedisStore(redis_server.url))


def _record(sid="s1", owner="key-a"):
    return SessionRecord(sid, owner, "0" * 64, "sam2.1_hiera_tiny", 256, time.time())


def run(coro):
    return asyncio.run(coro)


def test_create_write_load_delete(store_factory):
    async def scenario():
        store = store_factory()
        await store.create(_record(), b"h0", {"1:c:0": b"e0"}, ttl=60)
        v = await store.write("s1", 0, b"h1", {"1:n:1": b"e1"}, [], ttl=60)
        v = await store.write("s1", v, b"h2", {"1:n:2": b"e2"}, ["1:n:1"], ttl=60)
        got = await store.load("s1")
        assert (got.record.version, got.header, got.entries) == (2, b"h2", {"1:c:0": b"e0", "1:n:2": b"e2"})
        assert await store.count_owned("key-a") == 1 and await store.count_owned("key-b") == 0
        await store.delete("s1")
        assert await store.load("s1") is None
        await store.close()

    run(scenario())


def test_a_stale_writer_is_refused_and_changes_nothing(store_factory):
    async def scenario():
        store = store_factory()
        await store.create(_record("s2"), b"h0", {}, ttl=60)
        await store.write("s2", 0, b"h1", {"a": b"1"}, [], ttl=60)
        with pytest.raises(VersionConflict):
            await store.write("s2", 0, b"stale", {"b": b"2"}, [], ttl=60)
        got = await store.load("s2")
        assert (got.header, got.entries, got.record.version) == (b"h1", {"a": b"1"}, 1)
        await store.close()

    run(scenario())


def test_keys_expire(store_factory):
    async def scenario():
        store = store_factory()
        await store.create(_record("s3"), b"h", {"a": b"1"}, ttl=1)
        await asyncio.sleep(1.3)
        assert await store.load("s3") is None
        await store.close()

    run(scenario())


def test_redis_keeps_sessions_across_a_restart_with_persistence(redis_server):
    async def write():
        store = RedisStore(redis_server.url)
        await store.create(_record("s4"), b"h", {"a": b"1"}, ttl=60)
        await store.close()

    async def read():
        store = RedisStore(redis_server.url)
        got = await store.load("s4")
        await store.close()
        return got

    run(write())
    redis_server.restart()
    assert run(read()).entries == {"a": b"1"}


def test_redis_down_is_reported_not_hung(tmp_path):
    server = RedisServer(tmp_path).start()
    url = server.url
    server.stop()

    async def scenario():
        store = RedisStore(url)
        assert await store.ping() is False
        t = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.load("anything")
        assert time.monotonic() - t < 5
        await store.close()

    run(scenario())
