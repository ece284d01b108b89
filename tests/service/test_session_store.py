"""Session stores: MemoryStore and RedisStore (a real redis-server) behave the same."""

import asyncio
import time

import pytest

from service.session_store import MemoryStore, RedisStore, SessionRecord, StoreUnavailable, VersionConflict, connect
from tests.redis_server import RedisClusterSet, RedisSentinelSet, RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret", appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory):
    """A master, a replica and a Sentinel: what `redis+sentinel://` URLs point at."""
    sentinel = RedisSentinelSet(tmp_path_factory.mktemp("sentinel")).start()
    yield sentinel
    sentinel.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    cluster = RedisClusterSet(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
def store_factory(request):
    if request.param == "memory":
        return lambda: MemoryStore()
    server = request.getfixturevalue({"redis": "redis_server", "sentinel": "redis_sentinel",
                                      "cluster": "redis_cluster"}[request.param])
    return lambda: RedisStore(server.url)


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


def test_a_session_lives_in_one_cluster_slot_and_the_owner_index_outside_its_transactions(redis_cluster):
    """Redis Cluster refuses transactions across slots (CROSSSLOT): each session's keys share its hash tag."""
    async def scenario():
        store = RedisStore(redis_cluster.url)
        assert await store.ping() is True
        sids = [f"sid-{i}" for i in range(12)]  # spread over the three nodes
        for sid in sids:
            await store.create(_record(sid, owner="key-c"), b"h", {"a": b"1"}, ttl=60)
            await store.write(sid, 0, b"h1", {"b": b"2"}, ["a"], ttl=60)
        slots = {await store._redis.cluster_keyslot(k) for k in store._keys(sids[0])}
        assert len(slots) == 1
        nodes = {store._redis.get_node_from_key(store._keys(sid)[0]).port for sid in sids}
        assert len(nodes) > 1  # the sessions really are spread over the cluster
        assert await store.count_owned("key-c") == 12
        for sid in sids:
            assert (await store.load(sid)).entries == {"b": b"2"}
            await store.delete(sid)
        assert await store.count_owned("key-c") == 0
        await store.close()

    run(scenario())


def test_sentinel_failover_keeps_the_sessions_and_the_store_follows_the_new_master(redis_sentinel):
    """One store (as a replica holds it) across a failover: its next commands reach the promoted replica."""
    async def scenario():
        store = RedisStore(redis_sentinel.url)
        assert await store.ping() is True
        await store.create(_record("s-fail"), b"h", {"a": b"1"}, ttl=60)
        await store._redis.execute_command("WAIT", 1, 2000)  # the replica has it before the master goes
        old = redis_sentinel.master_port()
        await asyncio.to_thread(redis_sentinel.kill_master)
        assert redis_sentinel.master_port() != old
        got = await store.load("s-fail")
        v = await store.write("s-fail", got.record.version, b"h2", {"b": b"2"}, [], ttl=60)
        assert (await store.load("s-fail")).entries == {"a": b"1", "b": b"2"} and v == 1
        await store.close()

    run(scenario())


@pytest.mark.parametrize("url, message", [
    ("memcached://127.0.0.1:11211", "unknown session store URL scheme"),
    ("redis+sentinel://127.0.0.1:26379", "names the master"),
    ("redis+replica://127.0.0.1:6379", "unknown session store URL scheme"),
])
def test_bad_store_urls_are_refused_with_the_accepted_forms(url, message):
    with pytest.raises(ValueError, match=message):
        connect(url)


def test_tls_urls_take_a_private_ca():
    """`rediss+cluster://` and `rediss+sentinel://` use TLS; `?ssl_ca_certs=` names a private CA."""
    from redis.asyncio.cluster import RedisCluster

    client = connect("rediss+cluster://:pw@10.0.0.1:6379,10.0.0.2:6379?ssl_ca_certs=/etc/ca.pem")
    assert isinstance(client, RedisCluster)
    kwargs = client.get_connection_kwargs()
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem" and kwargs["password"] == "pw"
    sentinel = connect("rediss+sentinel://:pw@10.0.0.1:26379/m/2?ssl_ca_certs=/etc/ca.pem&sentinel_password=sp")
    pool = sentinel.connection_pool
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem" and pool.connection_kwargs["db"] == 2
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
