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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.messages import Forecast
from models.lob_data import EventBuilder
from models.lob_export import MicroModel
from models.lob_features import N_FEATURES, new_state, step


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


class MicroForecaster:
    """``on_messages(batch, now)`` -> forecasts; ``ticks`` maps instrument id -> tick in the
    feed's price units (the model's ``tick`` is checked against it when given)."""

    def __init__(
        self, model_dir: str | Path, ticks: dict[int, float], publish_delta: float = 0.05
    ) -> None:
        self.model = MicroModel(model_dir)
        meta = self.model.meta
        # the mean size of a mid change in training, in ticks (the feed's units may differ)
        move = meta.get("expected_move_ticks")
        if move is None:
            move = float(meta.get("expected_move", 0.0)) / float(meta.get("tick", 1.0) or 1.0)
        self.move_ticks = float(move)
        self.coalesce = bool(meta.get("coalesce", False))
        self.levels = int(meta.get("levels", 1))
        self.version = f"micro:{meta.get('stream', '?')}:{str(meta.get('onnx_sha256', ''))[:8]}"
        self.publish_delta = publish_delta
        self.inst: dict[int, _Instrument] = {}
        for iid, tick in ticks.items():
            st, ring = new_state()
            self.inst[iid] = _Instrument(EventBuilder(iid, self.levels), float(tick), st, ring)
        self.rows_scored = 0

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
        lean_flip = (p - 0.5) * (s.last_p - 0.5) < 0
        if not (abs(p - s.last_p) >= self.publish_delta or lean_flip or s.last_p != s.last_p):
            return
        s.last_p = p
        mid = 0.5 * (float(b.bid_px[0]) + float(b.ask_px[0]))
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
