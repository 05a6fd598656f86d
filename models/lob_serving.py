"""Serving a micro direction model on live market data: messages in, ``Forecast``s out.

Per instrument an ``EventBuilder`` keeps the book, ``models.lob_features.step`` the feature
state, and the exported model (``models.lob_export.MicroModel``) turns the row into P(up) of the
next mid change. Events are made as the model's training made them: when its stream was
coalesced (LOBSTER: messages that share a time are one event), the messages of one instrument
and one time are held and stepped once, when a later time arrives or the batch of messages
ends (a burst split across two batches is two events: the one difference from training, and
the reason feeds publish a burst in one go). A forecast goes out when P(up) has moved by
``publish_delta`` since the last one for that instrument (or leans the other way): the
strategies act on changes, not on every message.

The forecast's ``point`` is one step: the expected log change of the mid at its next change,
(2 P(up) - 1) x the mean size of a change in training / the mid (ForecastTaker's
``min_edge_bps`` reads it as it reads a bar model's); ``p_up`` carries P(up) itself, ``ts_event``
the venue time of the event it was computed on, ``bar_ns`` 0 (event time, no bars).

``swap(model)`` serves a new version on the same books and feature states (the features are
the same code; ``models.lob_guard`` refuses a version with other levels or coalescing).
``monitor(...)`` turns on the drift monitors: the served feature rows' PSI against the training
rows (``models.input_drift``, meta.json ``feature_stats``) and the log loss of the served P(up)
on the realised next mid change (``models.lob_drift``, meta.json ``holdout``); ``checks()``
returns their changes of state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.messages import Forecast
from models.input_drift import InputDriftMonitor, InputDriftStatus
from models.lob_data import EventBuilder
from models.lob_drift import CLIP, LogLossMonitor, LossStatus
from models.lob_export import MicroModel
from models.lob_features import FEATURES, N_FEATURES, new_state, step
from models.lob_guard import expected_move_ticks

#: feature rows held for the input monitor between two pushes (a batch rarely has more)
_ROWS = 1024


@dataclass
class _Instrument:
    builder: EventBuilder
    tick: float
    state: np.ndarray
    ring: np.ndarray
    row: np.ndarray = field(default_factory=lambda: np.empty(N_FEATURES))
    pending_ts: int = -1  # the time of the event held back (coalescing), -1: none
    pending_trade: float = 0.0
    pending_recv: int = 0
    last_p: float = math.nan
    events: int = 0
    # the open change group (events scored since the mid last changed), for the loss monitor
    g_mid: float = math.nan
    g_n: int = 0
    g_log_up: float = 0.0  # sum of log P(up)
    g_log_dn: float = 0.0  # sum of log (1 - P(up))
    g_up: float = 0.0  # rows that leaned up (a coin counts half each way)
    g_dn: float = 0.0


class MicroForecaster:
    """``on_messages(batch, now)`` -> forecasts; ``ticks`` maps instrument id -> tick in the
    feed's price units (the engine's: 1). ``model_dir``: a directory or a loaded ``MicroModel``
    (the infer process's, checked by ``models.lob_guard`` against the instruments' tick size,
    the feed's levels and the running state first)."""

    def __init__(
        self,
        model_dir: str | Path | MicroModel,
        ticks: dict[int, float],
        publish_delta: float = 0.05,
    ) -> None:
        model = model_dir if isinstance(model_dir, MicroModel) else MicroModel(model_dir)
        self.coalesce = bool(model.meta.get("coalesce", False))
        self.levels = int(model.meta.get("levels", 1))
        self._serve(model)
        self.publish_delta = publish_delta
        self.inst: dict[int, _Instrument] = {}
        for iid, tick in ticks.items():
            st, ring = new_state()
            self.inst[iid] = _Instrument(EventBuilder(iid, self.levels), float(tick), st, ring)
        self.rows_scored = 0
        self.inputs: InputDriftMonitor | None = None
        self.loss: LogLossMonitor | None = None
        self._rows = np.empty((_ROWS, N_FEATURES))
        self._n_rows = 0
        self._loss: list[float] = []
        self._hit: list[float] = []

    def _serve(self, model: MicroModel) -> None:
        self.model = model
        self.meta = model.meta
        # the mean size of a mid change in training, in ticks (the feed's units may differ)
        move = expected_move_ticks(model.meta)
        self.move_ticks = move if math.isfinite(move) else 0.0
        self.version = model.version

    def swap(self, model: MicroModel) -> list[str]:
        """Serve ``model`` on the running books and feature states (its levels and coalescing
        must be the running ones: ``models.lob_guard.state_misfits``); the monitors start over
        on its references. Returns why a monitor is off for it."""
        assert int(model.meta.get("levels", 1)) == self.levels
        assert bool(model.meta.get("coalesce", False)) == self.coalesce
        self._serve(model)
        for s in self.inst.values():
            s.last_p = math.nan  # its first forecast goes out under its own version
            s.g_n, s.g_log_up, s.g_log_dn, s.g_up, s.g_dn = 0, 0.0, 0.0, 0.0, 0.0
        return self._references() if self.loss is not None else []

    def monitor(
        self, window: int = 500, margin: float = 0.0, z_crit: float = 3.0, psi: float = 0.25,
        psi_window: int = 5000,
    ) -> list[str]:  # fmt: skip
        """Turn the drift monitors on: the log loss over ``window`` changes (``margin``,
        ``z_crit`` as the bar model's error monitor), the inputs' PSI over ``psi_window`` rows
        (``psi`` 0: off). Returns why a monitor is off for this model ("input: ...")."""
        self.loss = LogLossMonitor(window, margin, z_crit)
        self.inputs = InputDriftMonitor(psi_window, psi)
        return self._references()

    def _references(self) -> list[str]:
        assert self.loss is not None and self.inputs is not None
        why = [f"output: {w}" for w in [self.loss.set_reference(self.meta)] if w]
        w = self.inputs.set_stats(self.meta.get("feature_stats"), FEATURES)
        self._n_rows = 0
        self._loss.clear()
        self._hit.clear()
        return why + ([f"input: {w}"] if w else [])

    def checks(self) -> list[InputDriftStatus | LossStatus]:
        """The monitors' changes of state since the last call (after ``on_messages``)."""
        out: list[InputDriftStatus | LossStatus] = []
        if self.inputs is not None:
            self._push_rows()
            st = self.inputs.check()
            if st is not None:
                out.append(st)
        if self.loss is not None and self._loss:
            self.loss.on_changes(np.array(self._loss), np.array(self._hit))
            self._loss.clear()
            self._hit.clear()
            lt = self.loss.check()
            if lt is not None:
                out.append(lt)
        return out

    def _push_rows(self) -> None:
        if self._n_rows and self.inputs is not None:
            self.inputs.on_rows(self._rows[: self._n_rows])
        self._n_rows = 0

    def on_messages(self, msgs: list[Any], now_ns: int) -> list[Forecast]:
        out: list[Forecast] = []
        for m in msgs:
            s = self.inst.get(getattr(m, "instrument_id", -1))
            if s is None:
                continue
            ts = getattr(m, "ts_event", None)
            if ts is None:
                continue
            if self.coalesce and s.pending_ts >= 0 and ts != s.pending_ts:
                self._step(s, out)  # the held event is complete: a later time arrived
            ev = s.builder.on_message(m)
            if ev is None:
                continue
            s.pending_trade = (s.pending_trade if s.pending_ts == ts else 0.0) + ev[1]
            s.pending_ts = ev[0]
            s.pending_recv = getattr(m, "ts_recv", now_ns) or now_ns
            if not self.coalesce:
                self._step(s, out)
        if self.coalesce:
            for s in self.inst.values():
                if s.pending_ts >= 0:
                    self._step(s, out)
        return out

    def _step(self, s: _Instrument, out: list[Forecast]) -> None:
        b = s.builder
        ok = step(
            s.state, s.ring, s.pending_ts, b.bid_px, b.bid_sz, b.ask_px, b.ask_sz,
            s.pending_trade, s.tick, s.row,
        )  # fmt: skip
        ts, recv = s.pending_ts, s.pending_recv
        s.pending_ts, s.pending_trade = -1, 0.0
        s.events += 1
        if not ok:
            return
        p = float(self.model.p_up(s.row[None, :])[0])
        self.rows_scored += 1
        mid = 0.5 * (float(b.bid_px[0]) + float(b.ask_px[0]))
        if self.loss is not None:
            self._score(s, mid, p)
        lean_flip = (p - 0.5) * (s.last_p - 0.5) < 0
        if not (abs(p - s.last_p) >= self.publish_delta or lean_flip or s.last_p != s.last_p):
            return
        s.last_p = p
        move = self.move_ticks * s.tick
        point = float((2.0 * p - 1.0) * move / mid) if mid > 0 else 0.0
        out.append(
            Forecast(
                instrument_id=b.iid,
                model_version=self.version,
                ts_origin=int(recv),
                ts_recv=int(recv),
                point=[point],
                ts_event=int(ts),
                p_up=p,
            )
        )

    def _score(self, s: _Instrument, mid: float, p: float) -> None:
        """The loss monitor's bookkeeping of one scored event: a changed mid closes the group
        of events scored since the last change (their label: its direction); the row joins the
        next group, and goes to the input monitor."""
        if s.g_n and mid != s.g_mid:
            up = mid > s.g_mid
            self._loss.append(-(s.g_log_up if up else s.g_log_dn) / s.g_n)
            self._hit.append((s.g_up if up else s.g_dn) / s.g_n)
            s.g_n, s.g_log_up, s.g_log_dn, s.g_up, s.g_dn = 0, 0.0, 0.0, 0.0, 0.0
        q = min(max(p, CLIP), 1.0 - CLIP)
        s.g_mid = mid
        s.g_n += 1
        s.g_log_up += math.log(q)
        s.g_log_dn += math.log(1.0 - q)
        lean = 1.0 if p > 0.5 else 0.0 if p < 0.5 else 0.5
        s.g_up += lean
        s.g_dn += 1.0 - lean
        if self.inputs is not None and self.inputs.enabled:
            if self._n_rows == _ROWS:
                self._push_rows()
            self._rows[self._n_rows] = s.row
            self._n_rows += 1
