"""Bar-close inference over many closes at once, for backtests (``procs.infer.ForecastOverlay``).

Why: a replay knows its market data ahead of time, so it need not pay a Python call per event
and a model call per bar close as the live infer process does. Here arrays of events go through
``BarAggregator.feed`` (numba), every bar they close is turned into feature rows by one
``FeatureWindows.push_bars`` call, the windows of every (close, instrument) pair that was ready
go to the model in a few large batches, and the monitors (error drift, band coverage, input
drift) replay their scores in numba.

The result is what ``InferEngine.on_market_data`` gives event by event — the same forecasts in
the same order, each with the index of the event it follows — because every step reuses the
engine's own state and rules (bars, windows, drift, adaptive conformal bands) and the model is
a pure function of its window (onnxruntime's CPU provider gives the same numbers for a row
whatever the batch: a test checks it on the shipped model). A model failure on a big batch falls back to one call per
close, so a failing close costs what it cost before: its forecasts and one ``infer_errors``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine.bars import ClosedBars
from engine.messages import Forecast
from models.windows import Pushed

log = logging.getLogger("gekko.infer")

#: windows per model call (onnxruntime's per-row cost is flat from a few hundred rows on)
MODEL_BATCH = 1024
#: closes recorded per kernel pass (at least ``max_gap_bars + 2``; see ``ClosedBars.alloc``),
#: fewer with many instruments (about 32 MiB of bars at most)
CLOSES_PER_PASS = 4096
_CELLS_PER_PASS = 1 << 20


class BatchInfer:
    """Events in (arrays), forecasts out, on an ``InferEngine``'s state (``eng``: its bars,
    windows, model, drift monitor and counts; the model loaded already)."""

    def __init__(self, eng: Any) -> None:
        self.eng = eng
        bars = eng.bars
        per_pass = min(CLOSES_PER_PASS, _CELLS_PER_PASS // max(1, bars.n_slots))
        self.closed = ClosedBars.alloc(max(per_pass, bars.max_gap_bars + 2), bars.n_slots)

    def feed(
        self, ts: np.ndarray, slot: np.ndarray, mid: np.ndarray, qty: np.ndarray
    ) -> tuple[list[Forecast], np.ndarray]:
        """Events in time order (see ``BarAggregator.feed`` for the columns); returns the
        forecasts they caused, in order, and for each the index of the event it follows (its
        ``ts_origin`` and ``ts_recv`` are that event's time)."""
        out: list[Forecast] = []
        after: list[np.ndarray] = []
        i, n = 0, len(ts)
        while i < n:
            i = self.eng.bars.feed(ts, slot, mid, qty, self.closed, i)
            if self.closed.n:
                self._closes(ts, out, after)
        return out, (np.concatenate(after) if after else np.zeros(0, dtype=np.int64))

    def _closes(self, ts: np.ndarray, out: list[Forecast], after: list[np.ndarray]) -> None:
        eng, c = self.eng, self.closed
        model, n = eng.model, c.n
        eng.counts["bars"] += n
        pushed = eng.windows.push_bars(
            c.valid[:n], c.high[:n], c.low[:n], c.close[:n], c.volume[:n], c.start_ns[:n]
        )
        rb, rs = np.nonzero(pushed.count >= model.input_size)  # per close, slots ascending
        fc_ok = np.zeros((n, c.valid.shape[1]), dtype=np.bool_)
        fc = np.zeros((n, c.valid.shape[1]))
        lo, hi = np.zeros_like(fc), np.zeros_like(fc)
        if rb.size:
            point, quant, ran = self._run(pushed, rb, rs)
            ok = ran & np.isfinite(point).all(axis=1) & np.isfinite(quant).all(axis=(1, 2))
            if eng.aci is not None:  # adaptive conformal, close by close as live (in place)
                eng.aci.replay(c.valid[:n], pushed.ret, rb, rs, quant, ok)
            eng.counts["infer_errors"] += int(np.count_nonzero(ran & ~ok))
            fc_ok[rb[ok], rs[ok]] = True
            fc[rb[ok], rs[ok]] = point[ok, 0]
            lo[rb[ok], rs[ok]] = quant[ok, 0, 0]
            hi[rb[ok], rs[ok]] = quant[ok, 0, -1]
            at = c.at[rb[ok]]
            after.append(at)
            self._forecasts(rs[ok], ts[at], point[ok], quant[ok], out)
        valid = c.valid[:n]
        if eng.aci is not None:
            if not rb.size:  # no forecast in this pass: its outcomes still judge earlier ones
                none = np.zeros((0, 1, 1))
                eng.aci.replay(valid, pushed.ret, rb, rs, none, np.zeros(0, dtype=np.bool_))
            eng.note_bands()
        self._drift(valid, pushed.ret, fc_ok, fc)
        self._coverage(valid, pushed.ret, fc_ok, lo, hi)
        if eng.inputs.enabled:
            vb, vs = np.nonzero(valid)  # per close, slots ascending: the live order
            self._inputs(pushed.gather(vb, vs, 1)[:, 0, :], np.cumsum(valid.sum(axis=1)))

    def _run(
        self, pushed: Pushed, rb: np.ndarray, rs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model over the windows of (close ``rb[i]``, slot ``rs[i]``) in batches of about
        MODEL_BATCH, whole closes each; a batch that fails is run again one close at a time, and
        a close that still fails has ``ran`` False (counted, logged once)."""
        eng = self.eng
        model = eng.model
        k = len(rb)
        point = np.zeros((k, model.horizon), dtype=np.float32)
        quant = np.zeros((k, model.horizon, len(model.quantiles)), dtype=np.float32)
        ran = np.ones(k, dtype=bool)
        ends = np.r_[np.flatnonzero(np.diff(rb)) + 1, k]  # where each close's windows end
        run = model.run if eng.aci is None else model.run_raw  # adaptive: ACI calibrates
        a = 0
        while a < k:
            j = int(np.searchsorted(ends, a + MODEL_BATCH, "right")) - 1
            b = (
                int(ends[j])
                if j >= 0 and ends[j] > a
                else int(ends[np.searchsorted(ends, a, "right")])
            )
            x = pushed.gather(rb[a:b], rs[a:b], model.input_size)
            a0, a = a, b
            try:
                point[a0:b], quant[a0:b] = run(x)
                eng.counts["runs"] += 1
                continue
            except Exception:  # the same failure as before, close by close (below)
                pass
            bounds = np.flatnonzero(np.diff(rb[a0:b])) + 1
            for lo, hi in zip(np.r_[0, bounds] + a0, np.r_[bounds, b - a0] + a0, strict=True):
                try:
                    point[lo:hi], quant[lo:hi] = run(x[lo - a0 : hi - a0])
                    eng.counts["runs"] += 1
                except Exception as exc:  # a provider failure, say: no forecast for this close
                    ran[lo:hi] = False
                    eng.counts["infer_errors"] += 1
                    if not eng._error_logged:
                        eng._error_logged = True
                        log.error(
                            "inference: model %s failed on a batch of %d: %s",
                            model.version,
                            hi - lo,
                            exc,
                        )
        return point, quant, ran

    def _forecasts(
        self,
        slots: np.ndarray,
        times: np.ndarray,
        point: np.ndarray,
        quant: np.ndarray,
        out: list[Forecast],
    ) -> None:
        eng = self.eng
        iids, version, bar_ns = eng.iids, eng.model.version, eng.bars.bar_ns
        levels = list(eng.model.quantiles)
        points = point.tolist()
        paths = quant.transpose(0, 2, 1).tolist()  # [k, levels, horizon]: a path per level
        for s, t, p, q in zip(slots.tolist(), times.tolist(), points, paths, strict=True):
            out.append(Forecast(iids[s], version, t, t, p, levels, q, t, bar_ns))
        eng.counts["forecasts_out"] += len(points)

    def _drift(self, valid: np.ndarray, ret: np.ndarray, fc_ok: np.ndarray, fc: np.ndarray) -> None:
        """The drift monitor as bar-by-bar closes would have left it; a change is logged."""
        eng = self.eng
        b, n = 0, len(valid)
        while b < n:
            b = eng.drift.replay(valid, ret, fc_ok, fc, b)
            if b < n:
                st = eng.drift.check()
                if st is not None:
                    eng.note_drift(st)
                b += 1

    def _coverage(
        self, valid: np.ndarray, ret: np.ndarray, fc_ok: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> None:
        """The band's coverage monitor as bar-by-bar closes would have left it."""
        eng = self.eng
        b, n = 0, len(valid)
        while b < n:
            b = eng.coverage.replay(valid, ret, fc_ok, lo, hi, b)
            if b < n:
                st = eng.coverage.check()
                if st is not None:
                    eng.note_drift(st)
                b += 1

    def _inputs(self, rows: np.ndarray, ends: np.ndarray) -> None:
        """The input drift monitor as bar-by-bar closes would have left it."""
        eng = self.eng
        b, n = 0, len(ends)
        while b < n:
            b = eng.inputs.replay(rows, ends, b)
            if b < n:
                st = eng.inputs.check()
                if st is not None:
                    eng.note_drift(st)
                b += 1
