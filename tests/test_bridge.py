"""Two real engines on one Redis: the consumer sees the producer's fills, in order, across a crash
of the producer's bridge and a restart of the producer engine — its supervisor records them and
its strategies receive them (``Strategy.on_remote``, tests/remote_probe.py) — and none of the
forged, replayed or foreign entries written into the producer's stream meanwhile."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from ops.cli import main as gekko_main
from ops.secrets import config_digest, redact
from ops.store.bus import stream_name
from ops.store.redis_store import client_for_url, key
from tests.conftest import ROOT
from tests.test_engine_e2e import is_ready, set_key

pytestmark = pytest.mark.timeout(420)

FILL_TYPES = ("OrderPartiallyFilled", "OrderFilled")
ENVELOPE = ("remote_source", "remote_ring", "remote_id", "remote_delivered_ns")


def mac_key_of(eid: str) -> str:
    """A made-up bridge key per engine (what ``[bridge] mac_key_file`` would hold)."""
    return f"made-up-bridge-key-of-{eid}-0123456789abcdef"


def engine_config(
    tmp: Path,
    eid: str,
    redis_url: str,
    peers: tuple[str, ...] = (),
    record: bool = False,
    **bridge: str,
) -> Path:
    text = (ROOT / "config.toml").read_text()
    text = set_key(text, "engine", "id", f'"{eid}"')
    text = set_key(text, "engine", "var_dir", f'"{tmp / eid / "var"}"')
    text = set_key(text, "storage.redis", "mode", f'"{redis_url}"')
    text = set_key(text, "bridge", "enabled", "true")
    text = set_key(text, "bridge", "mac_key", f'"{mac_key_of(eid)}"')
    for k, v in bridge.items():
        text = set_key(text, "bridge", k, v)
    for peer in peers:  # the engines whose frames this one accepts, with their keys
        text = set_key(text, f"bridge.peers.{peer}", "mac_key", f'"{mac_key_of(peer)}"')
    # a loaded CI box may take long to restart a worker: give the shutdown room to drain
    text = set_key(text, "supervisor", "shutdown_timeout_s", "40.0")
    text = set_key(
        text, "supervisor", "startup_timeout_s", "180.0"
    )  # (numba compiles, 2 busy cores)
    text = set_key(text, "supervisor", "heartbeat_timeout_s", "30.0")
    if record:  # the embedded PostgreSQL: where the audit records go
        text = set_key(text, "storage.postgres", "journal_fsync", "false")
    elif "\n[storage.postgres]" in text:  # not what this test is about: keep the engines light
        text = set_key(text, "storage.postgres", "mode", '"off"')
    if "\n[inference]" in text:
        text = set_key(text, "inference", "enabled", "false")
    (tmp / eid).mkdir(parents=True, exist_ok=True)
    path = tmp / eid / "config.toml"
    path.write_text(text)
    return path


def gekko_run(cfg: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--quiet", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def finish(p: subprocess.Popen[str], timeout: float = 180) -> str:
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"engine did not exit: {err[-3000:]}") from None
    assert p.returncode == 0, err[-3000:]
    return err


def bridge_of(p: subprocess.Popen[str]) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for c in psutil.Process(p.pid).children():
            with contextlib.suppress(psutil.Error):
                if "bridge" in c.cmdline() and "ops.worker" in c.cmdline():
                    return c
    return None


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_consumer_engine_sees_producer_fills_in_order_across_crash_and_restart(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture
) -> None:
    producer, consumer = "p" + uuid.uuid4().hex[:6], "c" + uuid.uuid4().hex[:6]
    client: redis.Redis = client_for_url(redis_url)
    stream = stream_name(producer, "events")
    cfg_p = engine_config(
        tmp_path, producer, redis_url, publish='["events"]', state_interval_s="0.2"
    )
    cfg_c = engine_config(
        tmp_path,
        consumer,
        redis_url,
        peers=(producer,),
        record=True,
        publish="[]",
        subscribe=f'["{producer}:events"]',
    )
    var_p = tmp_path / producer / "var" / "last_run"
    probe_out = tmp_path / "probe.jsonl"  # what the consumer's strategy saw through on_remote
    cfg_c.write_text(
        cfg_c.read_text()
        + '\n[[strategies]]\nid = 9\nname = "probe"\npath = "tests.remote_probe:RemoteProbe"\n'
        + f'instruments = ["AAPL"]\n[strategies.params]\nout = "{probe_out}"\n'
    )

    consumer_proc = gekko_run(cfg_c, "--duration", "200")
    try:
        # run 1 of the producer: a clean run
        t0 = time.monotonic()
        finish(gekko_run(cfg_p, "--duration", "2"))
        print(f"run1 {time.monotonic() - t0:.1f}s")
        fills_1 = jsonl(var_p / "fills.jsonl")
        n_run1 = client.xlen(stream)
        assert fills_1 and n_run1 > len(fills_1)
        inject_bad_entries(client, stream, producer)  # none of which may reach the consumer
        n_run1 = client.xlen(stream)

        # run 2: its bridge is killed mid-run, restarted by the supervisor, and resends what it may
        # not have confirmed; meanwhile the latest-state hashes are live
        t0 = time.monotonic()
        # (stopped by SIGTERM once the restarted bridge forwards again, not after a fixed time)
        run2 = gekko_run(cfg_p, "--duration", "150")
        wait_for(lambda: client.xlen(stream) > n_run1 + 20, 150, "run 2 to forward events")
        wait_for(
            lambda: float(client.hget(key(producer, "tob:AAPL"), "bid_px") or 0) > 0, 20, "prices"
        )
        tob = client.hgetall(key(producer, "tob:AAPL"))
        assert float(tob[b"bid_px"]) > 0 and float(tob[b"ask_px"]) > float(tob[b"bid_px"])
        assert 0 < client.pttl(key(producer, "tob:AAPL")) <= 10_000
        assert b"exec" in client.hgetall(key(producer, "health"))
        assert client.hget(key(producer, "risk"), "trading_state") == b"ACTIVE"
        cached = client.hgetall(key(producer, "config"))  # the engine's settings, for other hosts
        assert cached[b"text"].decode() == redact(cfg_p.read_text())  # its bridge key masked
        assert mac_key_of(producer).encode() not in cached[b"text"]
        assert cached[b"sha256"].decode() == config_digest(cfg_p.read_text())
        victim = bridge_of(run2)
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        # the supervisor restarts it: the new bridge reports READY and forwards again
        wait_for(lambda: is_ready(producer, "bridge", not_pid=victim.pid), 150, "a new bridge")
        n_restart = client.xlen(stream)
        wait_for(lambda: client.xlen(stream) > n_restart + 5, 150, "the new bridge to forward")
        run2.send_signal(signal.SIGTERM)
        finish(run2)
        print(f"run2 {time.monotonic() - t0:.1f}s")
        fills_2 = jsonl(var_p / "fills.jsonl")
        summary_2 = json.loads((var_p / "summary.json").read_text())
        assert any(r["worker"] == "bridge" for r in summary_2.get("restarts", [])), summary_2.get(
            "restarts"
        )
        assert fills_2

        # the consumer's group has read and acknowledged everything the producer wrote
        def caught_up() -> bool:
            last = client.xrevrange(stream, count=1)[0][0]
            groups = {g["name"]: g for g in client.xinfo_groups(stream)}
            g = groups.get(consumer.encode()) or groups.get(consumer)
            return g is not None and g["last-delivered-id"] == last and g["pending"] == 0

        try:
            wait_for(caught_up, 150, "the consumer engine to read the producer's stream")
        except AssertionError:
            consumer_proc.send_signal(signal.SIGTERM)
            _, err = consumer_proc.communicate(timeout=60)
            info = (client.xrevrange(stream, count=1), client.xinfo_groups(stream))
            raise AssertionError(f"consumer never caught up: {info}\n{err[-4000:]}") from None
    finally:
        if consumer_proc.poll() is None:
            consumer_proc.send_signal(signal.SIGTERM)
    err_c = finish(consumer_proc)
    client.close()
    # each bad entry dropped, counted (the bridge's exit line) and audited (in its PostgreSQL)
    assert "frames dropped: 1 bad mac, 1 replayed, 1 unknown engine" in err_c, err_c[-3000:]
    capsys.readouterr()
    assert gekko_main(["db", "audit", "--config", str(cfg_c), "--action", "bridge"]) == 0
    audit = capsys.readouterr().out  # each in the audit trail, with the engine it claimed
    for action, claimed in (
        ("bad_mac", producer),
        ("replayed", producer),
        ("unknown_engine", "mallory"),
    ):
        assert f"bridge.{action}" in audit and f'"claimed_source":"{claimed}"' in audit.replace(
            " ", ""
        ), audit

    remote = jsonl(tmp_path / consumer / "var" / "last_run" / "remote.jsonl")
    assert (
        remote
        and {r["remote_source"] for r in remote} == {producer}
        and {r["remote_ring"] for r in remote} == {"events"}
    )
    ids = [tuple(int(x) for x in r["remote_id"].split("-")) for r in remote]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # in order, no duplicate delivered
    seen_fills = [
        {k: v for k, v in r.items() if k not in ENVELOPE} for r in remote if r["type"] in FILL_TYPES
    ]
    assert seen_fills == fills_1 + fills_2  # every fill of both runs, once, in the producer's order
    # the consumer's strategy got the same messages, each once, in the same order, fills included
    probe = jsonl(probe_out)
    assert {p["remote_source"] for p in probe} == {producer}
    assert all(p.pop("own_ctx") for p in probe)
    probed = [{k: v for k, v in p.items() if k != "remote_source"} for p in probe]
    assert probed == [{k: v for k, v in r.items() if k not in ENVELOPE} for r in remote]
    assert [p for p in probed if p["type"] in FILL_TYPES] == fills_1 + fills_2
    assert os.path.exists(tmp_path / consumer / "var" / "last_run" / "summary.json")


def inject_bad_entries(client: redis.Redis, stream: str, producer: str) -> None:
    """What a host that can write to Redis could add to the producer's stream: a fill with a
    wrong MAC, a copy of an authentic fill under a fresh id, and a frame signed by an engine the
    consumer does not know."""
    from engine.messages import OrderFilled, OrderPartiallyFilled, tag_of
    from procs.bridge_auth import FrameSigner

    fill_tags = {str(tag_of(t)).encode() for t in (OrderFilled, OrderPartiallyFilled)}
    authentic = next(f for _, f in client.xrange(stream) if f[b"t"] in fill_tags)  # of run 1
    client.xadd(stream, {**authentic, b"q": b"99999999999999-0"})  # its MAC no longer matches
    client.xadd(stream, authentic)  # a replay: the same authentic frame again, under a new id
    mallory = FrameSigner("mallory", mac_key_of("mallory"))
    own = mallory.fields("events", 1, 0, authentic[b"run"], int(authentic[b"t"]), authentic[b"m"])
    client.xadd(stream, {**authentic, b"src": b"mallory", **own})


def test_a_dead_redis_never_stops_the_engine(tmp_path: Path) -> None:
    """The bridge logs, counts and retries; the engine trades on and stops cleanly."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    eid = "d" + uuid.uuid4().hex[:6]
    cfg = engine_config(tmp_path, eid, f"redis://127.0.0.1:{port}/0", publish='["events"]')
    cfg.write_text(set_key(cfg.read_text(), "supervisor", "shutdown_timeout_s", "3.0"))
    err = finish(gekko_run(cfg, "--duration", "2"))
    summary = json.loads((tmp_path / eid / "var" / "last_run" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["fills"] > 0
    assert not [r for r in summary.get("restarts", []) if r["worker"] == "bridge"]  # never crashed
    assert f"127.0.0.1:{port}" in err and "retrying with backoff" in err
