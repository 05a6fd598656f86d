"""Bridge authentication: the frame MAC and sequence checks (procs/bridge_auth.py), the receiving
half on a real Redis with forged, replayed and foreign entries written into it directly
(procs/bridge_recv.py), the fail-closed configuration (ops/bridge_config.py), and the audit
records' way to the supervisor."""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import AuditEvent, OrderFilled, Remote
from ops.config import ConfigError, parse_config
from ops.secrets import redact
from ops.store.bus import StreamBus, stream_name
from ops.store.redis_store import client_for_url
from procs.bridge import RING_DECODER
from procs.bridge_auth import (
    FrameGuard,
    FrameSigner,
    RejectAudit,
    frame_mac,
    marks_path,
    parse_seq,
    unauthenticated_notice,
)
from procs.bridge_recv import Receiver

KEY_A = "made-up-key-of-alpha-0123456789abcdefgh"
KEY_M = "made-up-key-of-mallory-0123456789abcdef"
FILL_T = 33  # OrderFilled's frame type


def _fill(i: int) -> OrderFilled:
    return OrderFilled(i, i, 1, 1, 19000 + i, 5, 5, 0, 0.1, 2, i, 10 + i, 20 + i, 30 + i)


def _payload(i: int) -> bytes:
    return msgspec.msgpack.encode(_fill(i))


def _fields(signer: FrameSigner, ring: str, epoch: int, seq: int, run: bytes) -> dict:
    """An entry as the publishing bridge writes it (ops/store/bus.py ``publish``)."""
    base = {b"src": signer.engine_id.encode(), b"run": run, b"t": str(FILL_T).encode()}
    return {
        **base,
        b"m": _payload(seq),
        **signer.fields(ring, epoch, seq, run, FILL_T, _payload(seq)),
    }


# --- the checks, without Redis ------------------------------------------------------------------
def test_guard_accepts_in_order_and_names_each_refusal(tmp_path: Path) -> None:
    alpha = FrameSigner("alpha", KEY_A)
    g = FrameGuard({"alpha": [KEY_A]}, tmp_path / "marks.json")
    st = "gk:{alpha}:s:events"
    ok = _fields(alpha, "events", 100, 1, b"run1")
    assert g.check(st, "alpha", "events", ok) == ("ok", (100, 1))
    g.accept(st, (100, 1), b"run1")
    # altered payload, wrong key, no MAC, MAC of another ring: bad MAC
    assert g.check(st, "alpha", "events", {**ok, b"m": _payload(9)})[0] == "bad_mac"
    wrong = _fields(FrameSigner("alpha", KEY_M), "events", 100, 2, b"run1")
    assert g.check(st, "alpha", "events", wrong)[0] == "bad_mac"
    assert g.check(st, "alpha", "events", {k: v for k, v in ok.items() if k != b"mac"})[0] == (
        "bad_mac"
    )
    assert g.check(st, "alpha", "orders", _fields(alpha, "events", 100, 2, b"run1"))[0] == "bad_mac"
    # another engine's name in alpha's stream, or an engine without a key: unknown
    mallory = _fields(FrameSigner("mallory", KEY_M), "events", 100, 2, b"run1")
    assert g.check(st, "alpha", "events", mallory)[0] == "unknown_engine"
    assert g.check("gk:{mallory}:s:events", "mallory", "events", mallory)[0] == "unknown_engine"
    # the same sequence again, an older one, and a ring sequence of the same run re-sent later
    assert g.check(st, "alpha", "events", ok) == ("replayed", (100, 1))
    assert g.check(st, "alpha", "events", _fields(alpha, "events", 99, 7, b"run0"))[0] == "replayed"
    assert (
        g.check(st, "alpha", "events", _fields(alpha, "events", 101, 1, b"run1"))[0] == "replayed"
    )
    # a new run (a later epoch) starts its sequence again: accepted
    assert g.check(st, "alpha", "events", _fields(alpha, "events", 101, 0, b"run2"))[0] == "ok"
    assert g.check(st, "alpha", "events", _fields(alpha, "events", 100, 2, b"run1"))[0] == "ok"


def test_previous_key_is_accepted_during_a_rotation(tmp_path: Path) -> None:
    g = FrameGuard({"alpha": [KEY_A, KEY_M]}, tmp_path / "m.json")
    old = _fields(FrameSigner("alpha", KEY_M), "events", 5, 0, b"r")
    assert g.check("s", "alpha", "events", old)[0] == "ok"
    assert FrameGuard({"alpha": [KEY_A, ""]}, tmp_path / "n.json").check(
        "s", "alpha", "events", old
    )[0] == ("bad_mac")


def test_marks_survive_a_restart_and_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = marks_path(tmp_path, "beta")
    g = FrameGuard({"alpha": [KEY_A]}, path)
    g.accept("s", (100, 4), b"run1")
    g.save()
    assert not path.with_name(path.name + ".tmp").exists()
    again = FrameGuard({"alpha": [KEY_A]}, path)
    replay = _fields(FrameSigner("alpha", KEY_A), "events", 100, 4, b"run1")
    assert again.check("s", "alpha", "events", replay)[0] == "replayed"
    assert again.start_id("s") == "100-4" and again.start_id("other") == "0"
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match=re.escape(str(path))):
        FrameGuard({"alpha": [KEY_A]}, path)


def test_reject_audit_is_rate_limited_and_says_what_it_left_out() -> None:
    a = RejectAudit("beta", limit=2, window_s=3600)
    got = [a.note("bad_mac", "s", f"1-{i}", b"alpha") for i in range(5)]
    assert [e is not None for e in got] == [True, True, False, False, False]
    ev = got[0]
    assert ev is not None and ev.action == "bridge.bad_mac" and ev.actor == "bridge"
    assert json.loads(ev.detail) == {
        "stream": "s",
        "engine_id": "beta",
        "entry_id": "1-0",
        "claimed_source": "alpha",
        "left_out": 0,
    }
    assert a.note("replayed", "s", "1-9", b"x") is not None  # its own budget
    (summary,) = a.flush()
    assert json.loads(summary.detail)["left_out"] == 3 and a.flush() == []


def test_unauthenticated_start_is_warned_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="gekko.bridge"):
        ev = unauthenticated_notice("beta", "/etc/gekko/config.toml")
    assert "authentication is OFF" in caplog.text and "/etc/gekko/config.toml" in caplog.text
    assert ev.action == "bridge.unauthenticated" and json.loads(ev.detail)["engine_id"] == "beta"


# --- the receiving half on a real Redis ----------------------------------------------------------
class _Metrics:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: list[int] = []

    def counter_index(self, name: str) -> int:
        self.names.append(name)
        self.values.append(0)
        return len(self.names) - 1

    def inc_i(self, i: int, n: int = 1) -> None:
        self.values[i] += n

    def get(self, name: str) -> int:
        return self.values[self.names.index(name)]


class _Ring:
    def __init__(self) -> None:
        self.out: list[Any] = []

    def publish(self, msg: Any) -> None:
        self.out.append(msg)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = client_for_url(redis_url)
    yield c
    c.close()


def _receiver(
    client: redis.Redis, me: str, src: str, var: Path
) -> tuple[Receiver, _Ring, _Metrics]:
    stream = stream_name(src, "events")
    ring, m = _Ring(), _Metrics()
    guard = FrameGuard({src: [KEY_A]}, marks_path(var, me))
    r = Receiver(me, me, {stream: (src, "events")}, 64, ring, m, guard, RejectAudit(me))
    r.connect(StreamBus(client, me))
    return r, ring, m


def _drain(r: Receiver) -> None:
    for _ in range(6):
        r.receive(None)


def test_forged_replayed_and_foreign_entries_never_reach_the_ring(
    client: redis.Redis, tmp_path: Path
) -> None:
    src, me = "a" + uuid.uuid4().hex[:8], "b" + uuid.uuid4().hex[:8]
    stream = stream_name(src, "events")
    alpha = FrameSigner(src, KEY_A)
    pub = StreamBus(client, src)
    frames = [(s, FILL_T, _payload(s)) for s in range(4)]
    auth = [alpha.fields("events", 500, s, b"run1", t, p) for s, t, p in frames]
    assert pub.publish(stream, 500, frames, "run1", auth=auth) == (4, 0)
    first = client.xrange(stream)[0][1]
    # written straight into Redis by someone who is not alpha
    client.xadd(stream, {**first, b"m": _payload(77)})  # altered: bad MAC
    client.xadd(stream, {k: v for k, v in first.items() if k not in (b"mac", b"q")})  # unsigned
    client.xadd(stream, first)  # an authentic entry again, under a fresh id: replayed
    mallory = FrameSigner("mallory", KEY_M)
    client.xadd(
        stream, {**first, b"src": b"mallory", **mallory.fields("events", 1, 0, b"r", 33, b"")}
    )
    frames = [(s, FILL_T, _payload(s)) for s in range(4, 6)]  # alpha goes on: still delivered
    auth = [alpha.fields("events", 500, s, b"run1", t, p) for s, t, p in frames]
    client.xadd(
        stream, {b"src": src.encode(), b"run": b"run1", b"t": b"33", b"m": _payload(4), **auth[0]}
    )
    client.xadd(
        stream, {b"src": src.encode(), b"run": b"run1", b"t": b"33", b"m": _payload(5), **auth[1]}
    )

    r, ring, m = _receiver(client, me, src, tmp_path)
    _drain(r)
    delivered = [x for x in ring.out if isinstance(x, Remote)]
    assert [x.msg for x in delivered] == [_fill(i) for i in range(6)]
    assert [x.stream_id for x in delivered] == [f"500-{i}" for i in range(6)]  # the sequence
    assert (m.get("remote_bad_mac"), m.get("remote_replayed"), m.get("remote_unknown_engine")) == (
        2,
        1,
        1,
    )
    audits = [x for x in ring.out if isinstance(x, AuditEvent)]
    assert [a.action for a in audits] == [
        "bridge.bad_mac",
        "bridge.bad_mac",
        "bridge.replayed",
        "bridge.unknown_engine",
    ]
    assert json.loads(audits[3].detail)["claimed_source"] == "mallory"
    assert client.xpending(stream, me)["pending"] == 0  # refused ones are acknowledged too
    assert json.loads(marks_path(tmp_path, me).read_text())[stream][:2] == [500, 5]
    # what the supervisor reads from the remote ring: envelopes and these records
    for x in (delivered[0], audits[0]):
        assert RING_DECODER.decode(msgspec.msgpack.encode(x)) == x


def test_restart_redelivery_is_a_duplicate_and_a_rolled_back_redis_a_replay(
    client: redis.Redis, tmp_path: Path
) -> None:
    src, me = "a" + uuid.uuid4().hex[:8], "b" + uuid.uuid4().hex[:8]
    stream = stream_name(src, "events")
    alpha = FrameSigner(src, KEY_A)
    frames = [(s, FILL_T, _payload(s)) for s in range(3)]
    auth = [alpha.fields("events", 700, s, b"run1", t, p) for s, t, p in frames]
    StreamBus(client, src).publish(stream, 700, frames, "run1", auth=auth)
    r, ring, m = _receiver(client, me, src, tmp_path)
    r.receive(None)  # the (empty) pending list
    bus = r.bus
    got = bus.read([stream], me, me, count=10, block_ms=None, pending=False)
    assert len(got) == 3
    # delivered into the ring and recorded locally, then the bridge died before the XACK
    for _, _, f in got:
        r.guard.accept(stream, (700, int(f[b"q"].split(b"-")[1])), b"run1")  # type: ignore[union-attr]
    r.guard.save()  # type: ignore[union-attr]
    r2, ring2, m2 = _receiver(client, me, src, tmp_path)  # its successor
    _drain(r2)
    assert ring2.out == [] and m2.get("remote_duplicates") == 3 and m2.get("remote_replayed") == 0
    assert client.xpending(stream, me)["pending"] == 0
    # someone rolls Redis's bookkeeping back (the delivered ids, the group) to replay the stream
    client.delete(f"gk:{{{me}}}:bridge:seen")
    client.xgroup_setid(stream, me, "0")
    r3, ring3, m3 = _receiver(client, me, src, tmp_path)
    _drain(r3)
    assert [x for x in ring3.out if isinstance(x, Remote)] == []
    assert m3.get("remote_replayed") == 3
    assert {x.action for x in ring3.out} == {"bridge.replayed"}


def test_a_new_group_starts_after_what_was_accepted(client: redis.Redis, tmp_path: Path) -> None:
    src, me = "a" + uuid.uuid4().hex[:8], "b" + uuid.uuid4().hex[:8]
    stream = stream_name(src, "events")
    alpha = FrameSigner(src, KEY_A)
    frames = [(s, FILL_T, _payload(s)) for s in range(4)]
    auth = [alpha.fields("events", 900, s, b"run1", t, p) for s, t, p in frames]
    StreamBus(client, src).publish(stream, 900, frames, "run1", auth=auth)
    g = FrameGuard({src: [KEY_A]}, marks_path(tmp_path, me))
    g.accept(stream, (900, 1), b"run1")
    g.save()
    r, ring, m = _receiver(client, me, src, tmp_path)  # its group does not exist yet
    _drain(r)
    assert [x.stream_id for x in ring.out] == ["900-2", "900-3"] and m.get("remote_replayed") == 0


def test_a_forged_last_entry_does_not_lend_the_publisher_its_epoch(client: redis.Redis) -> None:
    src = "a" + uuid.uuid4().hex[:8]
    stream = stream_name(src, "events")
    alpha = FrameSigner(src, KEY_A)
    bus = StreamBus(client, src)
    frames = [(0, FILL_T, _payload(0))]
    bus.publish(
        stream, 300, frames, "runA", auth=[alpha.fields("events", 300, 0, b"runA", 33, _payload(0))]
    )
    ours = lambda f: alpha.authentic("events", f)  # noqa: E731
    assert bus.epoch_for(stream, 100, "runA", authentic=ours) == 300  # our own: same run
    client.xadd(stream, {b"src": src.encode(), b"run": b"runA", b"m": b"x"}, id="5000-0")
    assert bus.epoch_for(stream, 100, "runA") == 5000  # unauthenticated: taken in
    assert bus.epoch_for(stream, 100, "runA", authentic=ours) == 5001  # not ours: moved past it


# --- configuration: fail closed --------------------------------------------------------------------
_MIN = '\n[[instruments]]\ninstrument_id = 1\nsymbol = "A"\n'


@pytest.mark.parametrize(
    ("bridge", "key", "says"),
    [
        ("enabled = true", "bridge.mac_key", "authenticate = false"),
        (
            f'enabled = true\nmac_key = "{KEY_A}"\nsubscribe = ["alpha:events"]',
            "bridge.subscribe[0]",
            "alpha",
        ),
        ('mac_key = "q7-zx-k3y-w9"', "bridge.mac_key", "at least 32"),
        (
            '[bridge.peers.alpha]\nprevious_mac_key = "' + KEY_A + '"',
            "bridge.peers.alpha.mac_key",
            "missing",
        ),
    ],
)
def test_config_refuses_a_bridge_that_cannot_authenticate(bridge: str, key: str, says: str) -> None:
    text = "[bridge]\n" + bridge if not bridge.startswith("[") else bridge
    with pytest.raises(ConfigError) as err:
        parse_config(text + _MIN)
    assert err.value.key == key and says in str(err.value)


def test_config_takes_keys_from_files_and_hides_them(tmp_path: Path) -> None:
    own, peer = tmp_path / "own.key", tmp_path / "alpha.key"
    for p, k in ((own, "made-up-own-key-from-a-file-0123456789"), (peer, KEY_A)):
        p.write_text(k + "\n")
        os.chmod(p, 0o600)
    cfg = parse_config(
        f'[bridge]\nenabled = true\nsubscribe = ["alpha:events"]\nmac_key_file = "{own}"\n'
        f'[bridge.peers.alpha]\nmac_key_file = "{peer}"\n' + _MIN
    )
    assert (
        cfg.bridge.mac_key.startswith("made-up-own-key")
        and cfg.bridge.peers["alpha"].mac_key == KEY_A
    )
    assert KEY_A not in redact(f"peer key {KEY_A}") and "made-up-own" not in redact(
        cfg.bridge.mac_key
    )
    off = parse_config(
        '[bridge]\nenabled = true\nauthenticate = false\nsubscribe = ["x:events"]\n' + _MIN
    )
    assert off.bridge.authenticate is False  # written explicitly: allowed (warned at start)


def test_supervisor_takes_bridge_records_into_the_audit_trail() -> None:
    from ops.supervisor import Supervisor

    got: list[tuple[str, str, dict]] = []

    class _Sup:
        def _audit(self, actor: str, action: str, **detail: Any) -> None:
            got.append((actor, action, detail))

    ev = RejectAudit("beta").note("replayed", "gk:{alpha}:s:events", "1-2", b"alpha")
    assert ev is not None
    Supervisor._audit_bridge(_Sup(), ev)  # type: ignore[arg-type]
    assert got == [
        (
            "bridge",
            "bridge.replayed",
            {
                "stream": "gk:{alpha}:s:events",
                "engine_id": "beta",
                "entry_id": "1-2",
                "claimed_source": "alpha",
                "left_out": 0,
            },
        )
    ]


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from([b"src", b"run", b"t", b"m", b"q", b"mac", b"x"]),
        st.one_of(st.binary(max_size=48), st.sampled_from([b"alpha", b"1-2", b"33", b""])),
    )
)
def test_any_entry_is_judged_without_error_and_only_a_signed_one_passes(fields: dict) -> None:
    """Whatever a Redis writer puts in an entry, the check answers (never raises) and says "ok"
    only for what alpha's key signed."""
    g = FrameGuard({"alpha": [KEY_A]}, Path("/nonexistent/never-written.json"))
    verdict, _ = g.check("s", "alpha", "events", fields)
    assert verdict in ("bad_mac", "unknown_engine")  # no MAC made without the key
    if fields.get(b"src") == b"alpha" and all(k in fields for k in (b"run", b"t")):
        q = fields.get(b"q", b"1-2")
        signed = {**fields, b"q": q}
        signed[b"mac"] = frame_mac(
            KEY_A.encode(),
            "alpha",
            "events",
            q,
            fields[b"run"],
            fields[b"t"],
            fields.get(b"m", b""),
        )
        assert g.check("s", "alpha", "events", signed)[0] == ("ok" if parse_seq(q) else "bad_mac")
