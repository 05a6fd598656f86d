"""The micro model's serving guardrails: refused at start and at a swap with a reason when its
tick, expected move, book levels, instruments or running state do not fit; hot-swapped on the
running books and feature states (a half-written file is not loaded, a refused version leaves
the last good one serving); drift monitors that fire on a stream that turned against the model
and stay quiet on an honest one."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest

from engine.messages import DriftEvent, ModelRegistered, ModelRejected, ModelSwapped, Quote, Trade
from models.lob_data import BookEvents
from models.lob_drift import LogLossMonitor, monitor_meta
from models.lob_eval import samples
from models.lob_export import export_micro
from models.lob_guard import MicroSpec, feed_levels, misfits, state_misfits
from models.lob_models import LinearLogit
from models.lob_serving import MicroForecaster
from procs.micro_serving import MicroServing
from tests.test_infer import make_cfg

ROOT = Path(__file__).resolve().parents[1]


def signal_stream(n: int, seed: int, spread_mult: int = 1) -> BookEvents:
    """An L1 book whose next mid change leans toward the bigger queue (P(up) = sigmoid(3 x
    imbalance)): a model can learn it, and one served on the sizes swapped loses."""
    rng = np.random.default_rng(seed)
    bsz = rng.integers(1, 60, n)
    asz = rng.integers(1, 60, n)
    imb = (bsz - asz) / (bsz + asz)
    moves = rng.random(n) < 0.3
    up = rng.random(n) < 1 / (1 + np.exp(-3 * imb))
    step = np.where(moves, np.where(up, 1, -1), 0)
    mid = 10_000 + np.concatenate([[0], np.cumsum(step[:-1])])  # event i's move shows at i + 1
    half = rng.choice([1, 1, 2], n) * spread_mult  # even spreads: the book's mid is ``mid``
    bid = (mid - half)[:, None]
    ask = (mid + half)[:, None]
    trade = np.where(rng.random(n) < 0.1, rng.integers(-5, 6, n), 0).astype(np.float64)
    ts = np.cumsum(rng.integers(10**5, 10**7, n))
    return BookEvents("sig", ts, bid, bsz[:, None], ask, asz[:, None], trade, 1.0)


def messages(ev: BookEvents, iid: int = 1, flip: bool = False) -> list:
    """The feed's messages of a stream; ``flip``: bid and ask sizes swapped (the imbalance's
    sign turned against the model) and trade signs reversed, prices as they were."""
    out: list = []
    for i in range(len(ev)):
        t = int(ev.ts[i])
        b, a = int(ev.bid_sz[i, 0]), int(ev.ask_sz[i, 0])
        if flip:
            b, a = a, b
        if ev.trade[i]:
            side = (1 if ev.trade[i] > 0 else -1) * (-1 if flip else 1)
            out.append(Trade(iid, int(ev.ask_px[i, 0]), int(abs(ev.trade[i])), side, t, t))
        out.append(Quote(iid, int(ev.bid_px[i, 0]), b, int(ev.ask_px[i, 0]), a, t, t))
    return out


def train(out: Path, seed: int = 0, **meta: object) -> Path:
    """A logit on one signal stream, with the monitors' references from a later one (as
    ``gekko micro-train --train-frac`` writes them); tick 1 x px_unit 0.01 = config.toml's."""
    x, y, g, _ = samples(signal_stream(20_000, seed))
    f = LinearLogit().fit(x, y)
    hx, hy, hg, _ = samples(signal_stream(8_000, seed + 100))
    xs, ys, gs = np.concatenate([x, hx]), np.concatenate([y, hy]), np.concatenate([g, hg + 10**9])
    train_rows = np.arange(len(xs)) < len(x)
    refs = monitor_meta(f.predict, xs, ys, gs, train_rows, ~train_rows)
    base = {"stream": f"sig{seed}", "tick": 1.0, "px_unit": 0.01, "levels": 1, "coalesce": False}
    base |= {"expected_move_ticks": 1.0, **refs}
    return export_micro(f, out, base | meta)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("micro")
    return {
        "a": train(d / "a", 0),
        "b": train(d / "b", 1),
        "levels2": train(d / "l2", 2, levels=2),
        "halftick": train(d / "ht", 3, tick=0.5),
    }


def _meta(d: Path) -> dict:
    return json.loads((d / "meta.json").read_text())


# --- the guardrails -------------------------------------------------------------------------


def test_each_misfit_is_a_reason() -> None:
    spec = MicroSpec(("AAPL", "MSFT"), (1, 2), (0.01, 0.05), feed_levels=1, feed_source="x")
    ok = {"tick": 1.0, "px_unit": 0.01, "levels": 1, "expected_move_ticks": 1.2}
    (why,) = misfits(ok, spec)  # MSFT's tick is not the model's
    assert "tick of 0.01" in why and "MSFT (0.05)" in why and "AAPL" not in why
    aapl = MicroSpec(("AAPL",), (1,), (0.01,), feed_levels=1, feed_source="quotes only")
    assert misfits(ok, aapl) == []
    assert misfits({k: v for k, v in ok.items() if k != "px_unit"}, aapl) == []  # not checkable
    for change, words in (
        ({"expected_move_ticks": 0.0}, "expected move"),
        ({"expected_move_ticks": None, "expected_move": math.nan}, "expected move"),
        ({"levels": 3}, "reads 3 book levels but the feed gives 1 (quotes only)"),
        ({"coalesce": "yes"}, "coalesce"),
        ({"instruments": ["MSFT"]}, "not for ['AAPL']"),
    ):
        (why,) = misfits(ok | change, aapl)
        assert words in why
    unknown = MicroSpec(("AAPL",), (1,), (0.01,), unknown=("TSLA",))
    assert "TSLA" in misfits(ok, unknown)[0]
    run = aapl.running(ok)
    assert state_misfits(ok, run) == [] and state_misfits(ok | {"levels": 3}, aapl) == []
    (why,) = state_misfits(ok | {"levels": 2}, run)
    assert "2 book levels but the running micro model 1" in why
    (why,) = state_misfits(ok | {"coalesce": True}, run)
    assert "coalescing" in why


def test_the_spec_of_a_config() -> None:
    cfg = make_cfg(ROOT / "models/shipped/default", micro_instruments=["MSFT"])
    spec = MicroSpec.from_config(cfg)
    assert spec.symbols == ("MSFT",) and spec.ticks == (0.01,) and spec.unknown == ()
    assert (spec.feed_levels, spec.feed_source) == (10, "[market] book_levels")
    everyone = MicroSpec.from_config(make_cfg(ROOT / "models/shipped/default"))
    assert everyone.symbols == ("AAPL", "MSFT", "XOM")
    m = msgspec.structs.replace(cfg.market, source="replay", replay_quotes=__file__)
    assert feed_levels(msgspec.structs.replace(cfg, market=m))[0] == 1
    with pytest.raises(Exception, match="micro_instruments"):
        make_cfg(ROOT / "models/shipped/default", micro_instruments=["NOPE"])


def _serving(tmp_path: Path, source: Path, **inf: object) -> MicroServing:
    cfg = make_cfg(ROOT / "models/shipped/default", micro_instruments=["AAPL"], **inf)
    t = iter(range(10**9))
    return MicroServing(cfg, source, clock=lambda: next(t))


def test_a_model_that_does_not_fit_is_refused_at_start(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    s = _serving(tmp_path, models["halftick"])
    (msg,) = s.poll()
    assert isinstance(msg, ModelRejected) and "tick of 0.005" in msg.reason
    assert "AAPL (0.01)" in msg.reason and s.fc is None
    assert s.poll() == []  # said once: not retried until its files change
    assert s.on_messages(messages(signal_stream(50, 5)), 0) == []
    warn = _serving(tmp_path, models["halftick"], mismatch="warn")
    assert isinstance(warn.poll()[0], ModelSwapped) and warn.fc is not None


# --- hot swap -------------------------------------------------------------------------------


def _install(src: Path, dst: Path, files: tuple[str, ...] = ("model.onnx", "meta.json")) -> None:
    dst.mkdir(exist_ok=True)
    for name in files:
        shutil.copyfile(src / name, dst / name)
        st = os.stat(dst / name)  # a new mtime whatever the file system's resolution
        os.utime(dst / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_a_new_version_is_swapped_in_on_the_running_feature_state(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    live = tmp_path / "live"
    _install(models["a"], live)
    s = _serving(tmp_path, live, micro_publish_delta=0.0)  # every scored event goes out
    swapped, reg = s.poll()
    va = s.fc.version
    assert isinstance(swapped, ModelSwapped) and (swapped.model_name, swapped.old_version) == (
        "micro",
        "",
    )
    assert swapped.new_version == va and va.startswith("micro:sig0:")
    assert isinstance(reg, ModelRegistered) and (reg.name, reg.version, reg.action) == (
        "micro",
        va,
        "serve",
    )
    msgs = messages(signal_stream(3000, 7))
    first = s.on_messages(msgs[:2000], 0)
    assert first and {f.model_version for f in first} == {va}
    state = s.fc.inst[1]
    # half written: the new meta.json beside the old model.onnx is not loaded
    _install(models["b"], live, ("meta.json",))
    (rej,) = s.poll()
    assert isinstance(rej, ModelRejected) and "does not match its meta.json hash" in rej.reason
    assert s.fc.version == va and s.poll() == []
    _install(models["b"], live, ("model.onnx",))  # the copy completes
    swapped, reg = s.poll()
    vb = s.fc.version
    assert (swapped.old_version, swapped.new_version) == (va, vb) and vb.startswith("micro:sig1:")
    assert (reg.action, reg.old_version) == ("swap", va)
    assert s.fc.inst[1] is state  # the books and feature states go on
    after = s.on_messages(msgs[2000:], 0)
    assert after and {f.model_version for f in after} == {vb}
    # on the kept state, model b scores exactly what it scores having seen the whole stream
    whole = MicroForecaster(models["b"], {1: 1.0}, publish_delta=0.0).on_messages(msgs, 0)
    assert len(whole) == len(first) + len(after)
    np.testing.assert_allclose([f.p_up for f in after], [f.p_up for f in whole[len(first) :]])
    # a version with other book levels cannot take over the state: refused, b serves on
    _install(models["levels2"], live)
    (rej,) = s.poll()
    assert "running micro model 1" in rej.reason and s.fc.version == vb
    assert s.counts == {
        "swaps": 1,
        "rejects": 2,
        "drift_events": 0,
        "forecasts": len(first + after),
    }


def test_a_model_that_appears_later_is_served_then(tmp_path: Path, models) -> None:  # type: ignore[no-untyped-def]
    live = tmp_path / "later"
    s = _serving(tmp_path, live)
    assert s.poll() == [] and s.fc is None  # nothing there yet: said once, nothing serves
    _install(models["a"], live)
    swapped, _ = s.poll()
    assert isinstance(swapped, ModelSwapped) and s.fc is not None
    assert s.on_messages(messages(signal_stream(500, 4)), 0)


# --- drift ----------------------------------------------------------------------------------


def _drift(model: Path, msgs: list, psi: float = 1.0) -> tuple[MicroForecaster, list]:
    fc = MicroForecaster(model, {1: 1.0}, publish_delta=0.05)
    assert fc.monitor(window=300, z_crit=3.0, psi=psi, psi_window=3000) == []
    seen: list = []
    for k in range(0, len(msgs), 256):  # in ring batches
        fc.on_messages(msgs[k : k + 256], 0)
        seen += fc.checks()
    return fc, seen


def test_the_log_loss_monitor_fires_on_a_flipped_stream_only(models) -> None:  # type: ignore[no-untyped-def]
    ev = signal_stream(12_000, 11)
    honest, quiet = _drift(models["a"], messages(ev))
    ref = _meta(models["a"])["holdout"]
    assert quiet == [] and honest.loss.samples == 300
    assert abs(honest.loss.z()) < 3 and ref["log_loss"] < 0.68  # the model has signal (ln 2: none)
    flipped, fired = _drift(models["a"], messages(ev, flip=True))
    (st,) = [s for s in fired if not hasattr(s, "feature")]
    assert st.drifting and st.z > 3 and st.loss > math.log(2) > ref["log_loss"]
    assert st.hit < 0.5 < ref["hit_rate"]


def test_the_input_monitor_fires_on_a_stream_in_other_ticks(models) -> None:  # type: ignore[no-untyped-def]
    _, quiet = _drift(models["a"], messages(signal_stream(8_000, 12)), psi=0.25)
    assert quiet == []
    wide, fired = _drift(models["a"], messages(signal_stream(8_000, 12, spread_mult=3)))
    (st,) = fired
    assert st.drifting and st.feature == "spread_ticks" and st.psi > 1.0


def test_drift_is_published_and_a_model_without_references_is_not_monitored(
    tmp_path: Path, models, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    s = _serving(tmp_path, models["a"], drift_window=300)
    s.poll()
    ev = signal_stream(12_000, 11)
    out = s.on_messages(messages(ev, flip=True), 0)
    (d,) = [m for m in out if isinstance(m, DriftEvent)]
    assert (d.kind, d.drifting, d.model_version) == ("logloss", 1, s.fc.version)
    assert d.stat > d.threshold == 3.0 and d.model_mae > d.naive_mae and "hit" in d.detail
    assert msgspec.msgpack.encode(d)
    assert "entered logloss drift" in caplog.text
    bare = tmp_path / "bare"
    _install(models["a"], bare)
    meta = _meta(bare)
    del meta["holdout"], meta["feature_stats"]
    (bare / "meta.json").write_text(json.dumps(meta))
    caplog.clear()
    import logging

    with caplog.at_level(logging.INFO, logger="gekko.infer"):
        s = _serving(tmp_path, bare)
        s.poll()
    assert "drift monitor off, output: its meta.json has no holdout" in caplog.text
    assert "drift monitor off, input: its meta.json has no feature_stats" in caplog.text
    assert not s.fc.loss.enabled and not s.fc.inputs.enabled


def test_the_loss_monitor_rule() -> None:
    m = LogLossMonitor(window=4, margin=0.0, z_crit=2.0)
    assert m.set_reference({}) != "" and not m.enabled
    assert m.set_reference({"holdout": {"log_loss": 0.6, "hit_rate": 0.6}}) == ""
    m.on_changes(np.array([0.6, 0.61, 0.59]), np.ones(3))
    assert m.check() is None  # window not full
    m.on_changes(np.array([0.6]), np.ones(1))
    assert m.check() is None
    m.on_changes(np.array([0.9, 0.95, 0.92, 0.91]), np.zeros(4))
    st = m.check()
    assert st is not None and st.drifting and st.hit == 0.0 and st.loss == pytest.approx(0.92)
    assert m.check() is None  # once
    m.on_changes(np.array([0.5, 0.55, 0.6, 0.52]), np.ones(4))
    left = m.check()
    assert left is not None and not left.drifting


def test_a_venue_run_narrows_the_micro_instruments_and_never_widens_them() -> None:
    from ops.venue_run import _narrowed

    cfg = make_cfg(ROOT / "models/shipped/default", micro_instruments=["AAPL", "MSFT"])
    assert _narrowed(cfg, {"AAPL", "XOM"})["inference"].micro_instruments == ["AAPL"]
    kept = _narrowed(cfg, {"XOM"})["inference"]  # none of them there: refused, naming them
    assert kept.micro_instruments == ["AAPL", "MSFT"]
    xom = [i for i in cfg.instruments if i.symbol == "XOM"]
    run = SimpleNamespace(inference=kept, instruments=xom, market=cfg.market)  # the venue's
    spec = MicroSpec.from_config(run)
    assert spec.symbols == () and spec.unknown == ("AAPL", "MSFT")
    (why,) = misfits({"expected_move_ticks": 1.0}, spec)
    assert "micro_instruments names ['AAPL', 'MSFT']" in why
