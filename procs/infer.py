"""The infer process: market data in, model forecasts out on the ``forecasts`` ring.

Per instrument it builds bars from the quotes and trades on ``md`` (``engine.bars``), turns each
closed bar into a feature row in a ring-buffer window (``models.windows``), and at every bar close
runs ONE batched onnxruntime call over every instrument whose window is full, publishing one
``Forecast`` per instrument. The forecast's ``ts_origin`` is the ``ts_recv`` of the tick that
closed the bar, so the tick-to-order latency of an order placed on a forecast includes inference.

Around that:
- the model comes from ``models.serving.ModelServer``: validated before it serves, hot-swapped
  when a new version appears (``ModelSwapped`` on the ring), a bad one refused with a clear log
  line and a ``ModelRejected`` while the last good model keeps serving;
- with no usable model at all the process still runs (and beats): it logs why and publishes
  nothing, and the rest of the engine trades on without forecasts;
- live monitors publish a ``DriftEvent`` (and log) on entering and on leaving their state: the
  one-step error against the naive forecast, relative to the model's trained ratio
  (``models.drift.DriftMonitor``), the band's coverage (``CoverageMonitor``), and the features'
  distribution against training (``models.input_drift``); docs/forecasting.md, "Serving
  guardrails".

``InferEngine`` is the whole state machine (message in, messages out, time passed in); ``run`` is
the ring plumbing around it. Market data is read non-gating: a slow model never holds the feed
back; what it misses is counted (``md_missed``).

Backtests compute the same forecasts in batches across bar closes: ``ForecastOverlay`` (row
batches of the fast replay, or messages) and ``with_forecasts`` (the exact path) on
``procs.infer_batch`` (docs/backtesting.md, "Forecasts in backtests").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.bars import BarAggregator
from engine.md_columns import MdKind
from engine.messages import (
    DriftEvent,
    Forecast,
    ModelRejected,
    ModelSwapped,
    Quote,
    Trade,
)
from models.conformal import OnlineAdaptive
from models.drift import (
    CoverageMonitor,
    CoverageStatus,
    DriftMonitor,
    DriftStatus,
    reference_ratio,
)
from models.features import FEATURES
from models.guardrails import ServingSpec
from models.input_drift import InputDriftMonitor, InputDriftStatus
from models.lob_serving import MicroForecaster
from models.registration import registered_message
from models.serving import LoadedModel, ModelServer, adaptive_bands
from models.windows import FeatureWindows
from procs.infer_batch import BatchInfer
from procs.infer_micro import MicroBacktest
from procs.loop import Input, Loop, Timer
from procs.micro_serving import MicroServing
from procs.runtime import STATE_READY, Worker

log = logging.getLogger("gekko.infer")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BAR_SECONDS = 60.0


def resolve_model_dir(path: str) -> Path:
    """A relative ``model_dir`` is taken from the working directory, else from the checkout
    (so the shipped default model is found whatever directory ``gekko run`` starts in)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = ROOT / p
    return alt if alt.exists() else p


class InferEngine:
    """Bars → feature windows → one batched model call per bar close → forecasts."""

    def __init__(
        self,
        cfg: Any,
        server: ModelServer | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        inf = cfg.inference
        self.cfg = inf
        symbols = list(inf.instruments) or [i.symbol for i in cfg.instruments]
        by_symbol = {i.symbol: i.instrument_id for i in cfg.instruments}
        self.iids = [by_symbol[s] for s in symbols]
        self.slot_of = {iid: k for k, iid in enumerate(self.iids)}
        n = len(self.iids)
        self.server = server or ModelServer(
            resolve_model_dir(inf.model_dir),
            FEATURES,
            inf.providers,
            inf.intra_op_threads,
            ServingSpec.from_config(inf, symbols),
        )
        self.clock = clock
        self.model: LoadedModel | None = None
        self.bars: BarAggregator | None = None
        self.windows: FeatureWindows | None = None
        self.drift = DriftMonitor(n, inf.drift_window, inf.drift_margin, inf.drift_z)
        self.coverage = CoverageMonitor(n, inf.drift_window, inf.coverage_tolerance, inf.drift_z)
        self.inputs = InputDriftMonitor(inf.drift_window, inf.input_drift_psi)
        #: [inference] conformal = "adaptive": per-instrument ACI over the model's bands
        self.aci: OnlineAdaptive | None = None
        self._aci_seen = (0, 0, 0)  # (judged, in served band, in fixed band) at the last report
        self.counts = dict.fromkeys(
            (
                "bars",
                "runs",
                "forecasts_out",
                "model_swaps",
                "model_rejects",
                "drift_events",
                "infer_errors",
            ),
            0,
        )
        self.last_run_ns = 0
        self._error_logged = False

    # --- the model -----------------------------------------------------------------------------
    def poll_model(self) -> list[Any]:
        """Check the model source; on a new good model reconfigure windows and bars.

        A refused version does not end the poll: the next newest one is tried at once (a bad
        newest version must not leave the engine without the good one beneath it).
        """
        out: list[Any] = []
        for _ in range(64):
            ev = self.server.poll()
            if ev is None:
                break
            now = self.clock()
            if ev.kind == "rejected":
                self.counts["model_rejects"] += 1
                out.append(ModelRejected(str(ev.path), ev.version, ev.reason[:2000], now))
                continue
            model = self.server.current
            assert model is not None
            self._configure(model)
            if ev.kind == "swapped":
                self.counts["model_swaps"] += 1
            out.append(ModelSwapped(model.name, ev.old_version, model.version, str(ev.path), now))
            break
        return out

    def _configure(self, model: LoadedModel) -> None:
        inf = self.cfg
        self.model = model
        if self.windows is None:
            self.windows = FeatureWindows(len(self.iids), model.input_size, model.n_features)
        else:
            self.windows.resize(model.input_size)
        # the running bar length: the config's, else the first served model's (a swap never
        # changes it: models.guardrails refuses a model of another bar length)
        bar_s = inf.bar_seconds or self.server.spec.bar_seconds or model.bar_seconds
        if not inf.every_n_ticks and not bar_s:
            log.error(
                "inference: neither [inference] bar_seconds nor the model's meta.json sets a bar "
                "length; using %.0f s",
                DEFAULT_BAR_SECONDS,
            )
            bar_s = DEFAULT_BAR_SECONDS
        if inf.bar_seconds and model.bar_seconds and inf.bar_seconds != model.bar_seconds:
            log.info(
                "inference: bars of %g s ([inference] bar_seconds) but model %s was trained on "
                "%g s bars: its forecasts are for a different horizon than it learned",
                inf.bar_seconds,
                model.version,
                model.bar_seconds,
            )
        bar_ns = 0 if inf.every_n_ticks else int(round(bar_s * 1e9))
        if self.bars is None or self.bars.bar_ns != bar_ns:
            if self.bars is not None:  # another bar length: the old rows mean something else
                self.windows.reset()
            self.bars = BarAggregator(
                len(self.iids), bar_ns=bar_ns, every_n_ticks=inf.every_n_ticks
            )
        self._monitor(model)

    def _monitor(self, model: LoadedModel) -> None:
        """The monitors start over on a new model: its errors, band and inputs are its own."""
        self.drift.set_reference(reference_ratio(model.meta))
        self.coverage.set_levels(model.quantiles)
        inf = self.cfg
        self.aci = adaptive_bands(model, len(self.iids), inf.conformal, inf.conformal_gamma)
        self._aci_seen = (0, 0, 0)
        why = self.inputs.set_stats(model.meta.get("feature_stats"), FEATURES)
        if why:
            log.info(
                "inference: inputs of model %s not monitored for drift: %s", model.version, why
            )

    # --- market data ---------------------------------------------------------------------------
    def on_market_data(self, msg: Any, ts_recv: int | None = None) -> list[Any]:
        """Feed one market-data message; returns the forecasts (and drift events) it caused."""
        bars = self.bars
        if bars is None:
            return []  # no model yet: nothing to build bars for
        ts = getattr(msg, "ts_event", None)
        if ts is None:
            return []
        origin = getattr(msg, "ts_recv", 0) if ts_recv is None else ts_recv
        out: list[Any] = []
        for _ in range(bars.due(ts)):
            bars.close_bar()
            self._on_close(origin, ts, out)
        slot = self.slot_of.get(msg.instrument_id)
        if slot is not None:
            if isinstance(msg, Quote):
                bars.on_quote(slot, msg.bid_px, msg.ask_px)
            elif isinstance(msg, Trade):
                bars.on_trade(slot, msg.qty)
        if bars.tick(ts):
            bars.close_bar(ts)
            self._on_close(origin, ts, out)
        return out

    def _on_close(self, origin: int, ts: int, out: list[Any]) -> None:
        bars, win, model = self.bars, self.windows, self.model
        assert bars is not None and win is not None and model is not None
        self.counts["bars"] += 1
        rows = win.push_all(
            bars.valid, bars.high, bars.low, bars.close, bars.volume, bars.closed_start_ns
        )
        valid = np.flatnonzero(bars.valid)
        self.drift.on_bars(valid, rows[valid, 0])
        self.coverage.on_bars(valid, rows[valid, 0])
        if self.aci is not None:  # the same realised returns judge the adaptive bands
            self.aci.observe_bars(bars.valid, rows[:, 0])
            self.note_bands()
        self.inputs.on_rows(rows[valid])
        ready = np.flatnonzero(win.count >= model.input_size)
        if ready.size:
            self._run(ready, origin, ts, out)
        for st in (self.drift.check(), self.coverage.check(), self.inputs.check()):
            if st is not None:
                out.append(self.note_drift(st))

    def note_drift(self, st: DriftStatus | CoverageStatus | InputDriftStatus) -> DriftEvent:
        """A monitor's change of state: counted, logged, and the event that publishes it."""
        model = self.model
        assert model is not None
        self.counts["drift_events"] += 1
        ev = drift_event(model.version, st, self.clock())
        on = bool(ev.drifting)
        what = {
            "error": f"one-step MAE {ev.model_mae:.3g} vs naive {ev.naive_mae:.3g}: z {ev.stat:.2f} "
            f"(critical {ev.threshold:g}; trained ratio to naive {ev.detail})",
            "coverage": f"band coverage {ev.stat:.3f} vs nominal {ev.threshold:.3f} "
            f"(tolerance {ev.margin:g})",
            "input": f"feature {ev.detail} PSI {ev.stat:.3f} (threshold {ev.threshold:g})",
        }[ev.kind]
        log.log(
            logging.WARNING if on else logging.INFO,
            "inference: model %s %s %s drift over %d samples: %s",
            model.version,
            "entered" if on else "left",
            ev.kind,
            ev.samples,
            what,
        )
        return ev

    def note_bands(self) -> None:
        """Adaptive conformal: after every ``drift_window`` step-1 outcomes, one line with the
        served band's coverage over them and what the fixed offsets' band would have covered."""
        aci, model = self.aci, self.model
        assert aci is not None and model is not None
        now = tuple(int(v) for v in aci.hits.sum(axis=0))
        n = now[0] - self._aci_seen[0]
        if n < self.cfg.drift_window:
            return
        a, f = ((x - y) / n for x, y in zip(now[1:], self._aci_seen[1:], strict=True))
        self._aci_seen = now  # type: ignore[assignment]
        log.info(
            "inference: model %s adaptive bands: step-1 coverage %.3f over the last %d outcomes "
            "(fixed offsets: %.3f), nominal %.3f",
            model.version,
            a,
            n,
            f,
            model.quantiles[-1] - model.quantiles[0],
        )

    def _run(self, slots: np.ndarray, origin: int, ts: int, out: list[Any]) -> None:
        model, win = self.model, self.windows
        assert model is not None and win is not None
        k = len(slots)
        x = win.gather(slots, model.input_size)
        t0 = self.clock()
        try:
            point, quant = model.run(x) if self.aci is None else model.run_raw(x)
        except Exception as exc:  # a provider failure, say: counted, logged once, no forecast
            self.counts["infer_errors"] += 1
            if not self._error_logged:
                self._error_logged = True
                log.error("inference: model %s failed on a batch of %d: %s", model.version, k, exc)
            return
        now = self.clock()
        self.last_run_ns = now - t0
        self.counts["runs"] += 1
        levels = list(model.quantiles)
        ok = np.isfinite(point).all(axis=1) & np.isfinite(quant).all(axis=(1, 2))
        if self.aci is not None:  # adaptive conformal: raw bands + offsets of what is known
            self.aci.calibrate_rows(slots, quant, ok)
        self.drift.on_forecasts(slots[ok], point[ok, 0])
        self.coverage.on_forecasts(slots[ok], quant[ok, 0, 0], quant[ok, 0, -1])
        # one conversion to Python lists for the whole batch (msgspec encodes lists)
        points = point.tolist()
        paths = quant.transpose(0, 2, 1).tolist()  # [b, levels, horizon]: a path per level
        iids, version, bar_ns = self.iids, model.version, self.bars.bar_ns  # type: ignore[union-attr]
        for i in range(k):
            if not ok[i]:
                self.counts["infer_errors"] += 1
                continue
            out.append(
                Forecast(
                    iids[slots[i]], version, origin, now, points[i], levels, paths[i], ts, bar_ns
                )
            )
            self.counts["forecasts_out"] += 1


def drift_event(
    version: str, st: DriftStatus | CoverageStatus | InputDriftStatus, ts: int
) -> DriftEvent:
    """The ``DriftEvent`` of a monitor's status (the one place its fields are laid out)."""
    if isinstance(st, DriftStatus):
        return DriftEvent(
            version, int(st.drifting), st.model_mae, st.naive_mae, st.margin, st.samples, ts,
            "error", st.z, st.z_crit, f"{st.reference:.4g}",
        )  # fmt: skip
    if isinstance(st, CoverageStatus):
        return DriftEvent(
            version, int(st.miscalibrated), 0.0, 0.0, st.tolerance, st.samples, ts,
            "coverage", st.coverage, st.nominal, f"z {st.z:.2f}",
        )  # fmt: skip
    return DriftEvent(
        version, int(st.drifting), 0.0, 0.0, 0.0, st.samples, ts,
        "input", st.psi, st.threshold, st.feature,
    )  # fmt: skip


def publish_registrations(producer: Any, eng: InferEngine, out: list[Any]) -> None:
    """After a ``ModelSwapped`` in ``out`` (already published), the ``ModelRegistered`` the
    recorder turns into the model's ``models`` row and a ``model.serve`` / ``model.swap`` audit
    row: infer has no database connection, the record goes through the recorder and its
    journal. A record, never a reason to stop serving: a failure is logged."""
    model = eng.server.current
    for m in out:
        if model is None or not isinstance(m, ModelSwapped):
            continue
        try:
            action = "swap" if m.old_version else "serve"
            producer.publish(
                registered_message(model.path, model.meta, action, "infer", m.old_version)
            )
        except Exception as exc:  # a frame over a tiny ring's max payload, say
            log.error("inference: model %s not registered (%s)", m.new_version, exc)


class ForecastOverlay:
    """The forecasts ``InferEngine`` would publish on a backtest's market data, computed in
    batches (``procs.infer_batch``): ``on_rows`` for the fast replay's ``MD_DTYPE`` row batches,
    ``on_messages`` for messages (a columnar source's preamble, the object path). Feed every
    market event once, in time order, through one or the other.

    Each call returns the forecasts its events caused, in order (``ts_origin`` = ``ts_recv`` =
    the ``ts_event`` of the event that closed the bar), and sets ``after``: for each forecast
    the index (in that call's rows or messages) of the event it follows — it is delivered right
    after that event, before the next one, as ``with_forecasts`` yields it. ``enabled`` is False
    with inference off or no usable model (the reason is logged): then nothing is ever forecast.
    """

    #: messages ``with_forecasts`` reads ahead per batch
    READ_AHEAD = 8192

    def __init__(self, cfg: Any) -> None:
        self.enabled = False
        self.after = np.zeros(0, dtype=np.int64)
        #: wall time spent forecasting in ``on_rows`` / ``on_messages`` (a backtest's inference share)
        self.busy_ns = 0
        #: wall time loading (and trial-running) the model
        self.load_ns = 0
        #: the micro model's serving (``[inference] micro_model_dir``), whether or not a bar
        #: model loads: it steps messages, so a backtest with one runs the exact path
        self.micro: MicroBacktest | None = None
        if not cfg.inference.enabled:
            return
        fc = micro_forecaster(cfg)
        self.micro = MicroBacktest(fc) if fc is not None else None
        self._now = 0
        t0 = time.perf_counter_ns()
        self.eng = InferEngine(cfg, clock=lambda: self._now)
        self.eng.poll_model()
        self.load_ns = time.perf_counter_ns() - t0
        if self.eng.model is None:
            return
        self._batch = BatchInfer(self.eng)
        ids = np.asarray(self.eng.iids, dtype=np.int64)
        self._ids_order = np.argsort(ids, kind="stable")
        self._ids_sorted = ids[self._ids_order]
        self._codes: dict[type, int] = {Quote: _QUOTE, Trade: _TRADE}
        self.enabled = True

    def on_rows(self, rows: np.ndarray) -> list[Forecast]:
        """Forecasts caused by a batch of ``engine.md_columns.MD_DTYPE`` rows (``after``: row
        indexes)."""
        if not self.enabled or len(rows) == 0:
            self.after = np.zeros(0, dtype=np.int64)
            return []
        t0 = time.perf_counter_ns()
        kind = rows["kind"]
        bid, ask, qty = rows["bid_px"], rows["ask_px"], rows["qty"]
        quoted = (kind == _QUOTE) & (bid > 0) & (ask > 0)
        out = self._feed(
            np.ascontiguousarray(rows["ts_event"]),
            self._slots(rows["instrument_id"]),
            np.where(quoted, (bid + ask) * 0.5, np.nan),
            np.where((kind == _TRADE) & (qty > 0), qty, 0).astype(np.float64),
        )
        self.busy_ns += time.perf_counter_ns() - t0
        return out

    def on_messages(self, msgs: Sequence[Any]) -> list[Forecast]:
        """Forecasts caused by a list of messages (``after``: message indexes); a message
        without ``ts_event`` (a forecast, a control) is passed over, as ``InferEngine`` does."""
        self.after = np.zeros(0, dtype=np.int64)
        if not self.enabled or not msgs:
            return []
        t0 = time.perf_counter_ns()
        ts = [getattr(m, "ts_event", None) for m in msgs]
        idx = None
        if None in ts:  # only messages with a venue time are events
            idx = [k for k, t in enumerate(ts) if t is not None]
            msgs = [msgs[k] for k in idx]
            ts = [ts[k] for k in idx]
            if not ts:
                self.busy_ns += time.perf_counter_ns() - t0
                return []
        codes = self._codes
        code = np.array(
            [codes[t] if t in codes else self._code(t) for t in map(type, msgs)], dtype=np.int8
        )
        n = len(msgs)
        mid = np.full(n, np.nan)
        q = np.flatnonzero(code == _QUOTE)
        if q.size:
            bid = np.array([msgs[k].bid_px for k in q.tolist()], dtype=np.int64)
            ask = np.array([msgs[k].ask_px for k in q.tolist()], dtype=np.int64)
            mid[q] = np.where((bid > 0) & (ask > 0), (bid + ask) * 0.5, np.nan)
        qty = np.zeros(n)
        tr = np.flatnonzero(code == _TRADE)
        if tr.size:
            lots = np.array([msgs[k].qty for k in tr.tolist()], dtype=np.int64)
            qty[tr] = np.where(lots > 0, lots, 0)
        iid = np.array([getattr(m, "instrument_id", -1) for m in msgs], dtype=np.int64)
        fcs = self._feed(np.array(ts, dtype=np.int64), self._slots(iid), mid, qty)
        if idx is not None:
            self.after = np.array(idx, dtype=np.int64)[self.after]
        self.busy_ns += time.perf_counter_ns() - t0
        return fcs

    def _code(self, t: type) -> int:
        """A message type's row kind for bars (a subclass of Quote / Trade counts as one)."""
        c = _QUOTE if issubclass(t, Quote) else _TRADE if issubclass(t, Trade) else 0
        self._codes[t] = c
        return c

    def _slots(self, iid: np.ndarray) -> np.ndarray:
        """The inference slot of each instrument id (-1: not forecast)."""
        iid = iid.astype(np.int64, copy=False)
        at = np.minimum(np.searchsorted(self._ids_sorted, iid), len(self._ids_sorted) - 1)
        return np.where(self._ids_sorted[at] == iid, self._ids_order[at], -1)

    def _feed(
        self, ts: np.ndarray, slot: np.ndarray, mid: np.ndarray, qty: np.ndarray
    ) -> list[Forecast]:
        if len(ts):
            self._now = int(ts[-1])  # the clock of a drift event (logged)
        out, self.after = self._batch.feed(ts, slot, mid, qty)
        return out


_QUOTE, _TRADE = int(MdKind.QUOTE), int(MdKind.TRADE)


def with_forecasts(
    cfg: Any, source: Iterable[Any], overlay: ForecastOverlay | None = None
) -> Iterator[Any]:
    """The inline twin of the infer process, for ``gekko backtest``: every market message of
    ``source``, each followed by the forecasts it caused (a bar close), stamped on the simulated
    clock (``ts_origin`` and ``ts_recv`` = the closing message's ``ts_event``), so the backtest's
    strategies get forecasts at the simulated time the live engine would compute them.

    Only ``Forecast`` messages are yielded (swaps and drift events are logged); with inference
    disabled, or no usable model, the source passes through unchanged. The micro model's
    forecasts (``[inference] micro_model_dir``) are placed by ``procs.infer_micro``. The source is read
    ahead (``ForecastOverlay.READ_AHEAD`` messages) so inference runs in batches; the sequence
    is the same as event by event, and an error the source raises comes after every message
    before it (and their forecasts) was yielded. Pass ``overlay`` to read its ``busy_ns`` after.
    """
    ov = overlay or ForecastOverlay(cfg)
    out = _bar_forecasts(ov, source) if ov.enabled else iter(source)
    if ov.micro is not None:  # the micro model's forecasts, at the events that made them
        out = ov.micro.interleave(out)
    return out


def _bar_forecasts(ov: ForecastOverlay, source: Iterable[Any]) -> Iterator[Any]:
    it = iter(source)
    while True:
        chunk: list[Any] = []
        err: Exception | None = None
        try:
            for msg in it:
                chunk.append(msg)
                if len(chunk) >= ov.READ_AHEAD:
                    break
        except Exception as exc:  # raised again once what came before it is out
            err = exc
        fcs = ov.on_messages(chunk)
        after = ov.after.tolist()
        j, nf = 0, len(fcs)
        for k, msg in enumerate(chunk):
            yield msg
            while j < nf and after[j] == k:
                yield fcs[j]
                j += 1
        if err is not None:
            raise err
        if len(chunk) < ov.READ_AHEAD:
            return


def micro_forecaster(cfg: Any) -> MicroForecaster | None:
    """The micro model of ``[inference] micro_model_dir`` over ``[inference] micro_instruments``
    (ticks in the engine's price units: 1), loaded, trial-run and checked against the
    configuration as the infer process does (``procs.micro_serving``); None when unset or
    refused (logged: the bar model serves on)."""
    d = cfg.inference.micro_model_dir
    if not d:
        return None
    try:
        serving = MicroServing(cfg, resolve_model_dir(d))
        serving.poll()
    except Exception:  # a model that breaks its loader: the bar model serves on without it
        log.exception("inference: micro model %s could not be loaded", d)
        return None
    return serving.fc


def run(cfg: Any, engine_id: str, incarnation: int = 0) -> int:
    w = Worker("infer", cfg, engine_id, incarnation)
    md = w.consume("md")  # before the model loads, as a reader joins (the Loop reads it)
    w.consume("control")
    forecasts = w.produce("forecasts")
    eng = InferEngine(cfg)
    out = eng.poll_model()  # loads (and trial-runs) the model before READY: no cold first bar
    if out:
        forecasts.publish_batch(out)
        publish_registrations(forecasts, eng, out)
    p = _InferProcess(w, eng, md, forecasts)
    if cfg.inference.micro_model_dir:  # checked, served, polled for new versions like the bar model
        p.micro = MicroServing(cfg, resolve_model_dir(cfg.inference.micro_model_dir))
        p.poll_micro()
    loop = Loop(
        w,
        [Input("md", on_batch=p.on_md_batch, batch=256, counter="md_in", processed=True)],
        [Timer(int(cfg.inference.poll_model_s * 1e9), p.poll_model), Timer(0, p.flush_counts)],
        idle_s=min(cfg.supervisor.heartbeat_interval_s, cfg.inference.poll_model_s),
    )
    w.beat(STATE_READY)
    model = eng.model
    log.info(
        "infer ready: %d instruments, model %s (%s, wait=%s)",
        len(eng.iids),
        f"{model.name} {model.version}" if model else "NONE",
        w.pinning,
        w.wait.kind,
    )
    return loop.run(on_exit=p.report)


class _InferProcess:
    """The infer process's handlers: market data in, forecasts out, counts to the metrics."""

    def __init__(self, w: Worker, eng: InferEngine, md: Any, forecasts: Any) -> None:
        self.w = w
        self.eng = eng
        self.md = md  # the md reader (its ``missed`` count)
        self.forecasts = forecasts
        self.idx = {n: w.metrics.counter_index(n) for n in (*eng.counts, "md_in", "md_missed")}
        self.h_run = w.metrics.hist("run_ns")
        self.h_t2f = w.metrics.hist("tick_to_forecast_ns")
        self.published = dict.fromkeys(eng.counts, 0)  # what the metrics region has
        self.micro: MicroServing | None = None  # [inference] micro_model_dir

    def on_md_batch(self, msgs: list[Any]) -> None:
        """A batch off the ring: each message to the bar model, the batch to the micro model
        (which makes one event per time of an instrument within it, as it was trained)."""
        now = time.monotonic_ns()
        for m in msgs:
            self.on_md(m, now)
        if self.micro is not None:
            out = self.micro.on_messages(msgs, now)
            if out:
                self.forecasts.publish_batch(out)

    def on_md(self, msg: Any, now_ns: int) -> None:
        eng = self.eng
        runs = eng.counts["runs"]
        out = eng.on_market_data(msg)
        if out:
            self.forecasts.publish_batch(out)
            if eng.counts["runs"] != runs:
                self.h_run.record(eng.last_run_ns)
                ts = getattr(msg, "ts_recv", 0)
                if ts:
                    self.h_t2f.record(time.monotonic_ns() - ts)

    def poll_model(self, now_ns: int) -> None:
        """A new model version (hot swap) or a refused one; the missed count with it."""
        out = self.eng.poll_model()
        if out:
            self.forecasts.publish_batch(out)
            publish_registrations(self.forecasts, self.eng, out)
        self.poll_micro()
        self.w.metrics.set("md_missed", self.md.missed)

    def poll_micro(self) -> None:
        """The micro model's source: a new version swapped in, or refused (published)."""
        if self.micro is None:
            return
        try:
            out = self.micro.poll()
        except Exception:  # a loader that breaks: the running micro model serves on
            log.exception("inference: polling the micro model failed")
            return
        for m in out:
            try:  # one at a time: a registration over a tiny ring's max frame is only logged
                self.forecasts.publish(m)
            except Exception as exc:
                log.error("inference: micro model message %s not published (%s)", type(m), exc)

    def flush_counts(self, now_ns: int = 0) -> None:
        """The engine's counts into the metrics region (what changed since the last pass)."""
        for name, v in self.eng.counts.items():
            if v != self.published[name]:
                self.w.metrics.inc_i(self.idx[name], v - self.published[name])
                self.published[name] = v

    def report(self) -> None:
        """At exit: the last counts, and one line saying what the process did."""
        self.w.metrics.set("md_missed", self.md.missed)
        self.flush_counts()
        c = self.eng.counts
        log.info(
            "infer: %d bars, %d model runs, %d forecasts, %d swaps, %d refused models, %d drift "
            "events, %d errors, %d market-data messages missed",
            c["bars"],
            c["runs"],
            c["forecasts_out"],
            c["model_swaps"],
            c["model_rejects"],
            c["drift_events"],
            c["infer_errors"],
            self.md.missed,
        )
        if self.micro is not None:
            self.micro.report()
