"""Serving a micro model on market-data messages computes what training computed: the same
events (one per time when the model's stream was coalesced), the same feature rows, the same
P(up); forecasts go out when P(up) moves, carry it, and its expected move."""

from __future__ import annotations

import numpy as np
import pytest

from engine.messages import Quote, Trade
from models.lob_data import BookEvents, events_from_messages
from models.lob_eval import samples
from models.lob_export import MicroModel, export_micro
from models.lob_features import features_of_events
from models.lob_models import LinearLogit
from models.lob_serving import MicroForecaster
from tests.test_lob_features import _random_stream


def _l1(ev: BookEvents) -> BookEvents:
    return BookEvents(
        ev.name, ev.ts, ev.bid_px[:, :1].copy(), ev.bid_sz[:, :1].copy(), ev.ask_px[:, :1].copy(),
        ev.ask_sz[:, :1].copy(), ev.trade, ev.tick,
    )  # fmt: skip


def _messages(ev: BookEvents, iid: int = 7) -> list:
    """Each row as the feed would send it: its trade (if any), then the touch after it."""
    out: list = []
    for i in range(len(ev)):
        t = int(ev.ts[i])
        if ev.trade[i]:
            side = 1 if ev.trade[i] > 0 else -1
            out.append(Trade(iid, int(ev.ask_px[i, 0]), int(abs(ev.trade[i])), side, t, t))
        out.append(
            Quote(iid, int(ev.bid_px[i, 0]), int(ev.bid_sz[i, 0]), int(ev.ask_px[i, 0]),
                  int(ev.ask_sz[i, 0]), t, t)
        )  # fmt: skip
    return out


def _model(tmp_path, ev: BookEvents, coalesce: bool) -> MicroModel:  # type: ignore[no-untyped-def]
    x, y, _, _ = samples(ev)
    meta = {"expected_move": 2.0, "coalesce": coalesce, "levels": 1, "stream": "t"}
    return export_micro(LinearLogit().fit(x, y), tmp_path / f"m{int(coalesce)}", meta)


def _offline_p(d, ev: BookEvents) -> np.ndarray:  # type: ignore[no-untyped-def]
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    return MicroModel(d).p_up(x[valid])


def test_a_coalesced_model_is_served_one_event_per_time_exactly_as_trained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = _l1(_random_stream(3000, 4))
    raw.ts[1::2] = raw.ts[0::2]  # bursts: two messages at one time
    ev = raw.coalesced()
    d = _model(tmp_path, ev, coalesce=True)
    fc = MicroForecaster(d, {7: ev.tick}, publish_delta=0.0)
    got = fc.on_messages(_messages(raw), 0)
    want = _offline_p(d, ev)
    assert len(got) == len(want) == len(ev)
    np.testing.assert_allclose([f.p_up for f in got], want, atol=1e-6)
    assert [f.ts_event for f in got] == ev.ts.tolist()
    assert got[0].point[0] == pytest.approx((2 * got[0].p_up - 1) * 2.0 / ev.mid[0])
    # what goes on the ring encodes (plain Python numbers, not numpy's)
    import msgspec

    assert msgspec.msgpack.encode(got[0])


def test_an_uncoalesced_model_steps_every_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = _l1(_random_stream(2000, 5))
    msgs = _messages(raw)
    ev = events_from_messages(msgs, 7, tick=raw.tick)
    d = _model(tmp_path, ev, coalesce=False)
    fc = MicroForecaster(d, {7: raw.tick}, publish_delta=0.0)
    got = []
    for k in range(0, len(msgs), 97):  # in batches, as the ring hands them over
        got += fc.on_messages(msgs[k : k + 97], 0)
    np.testing.assert_allclose([f.p_up for f in got], _offline_p(d, ev), atol=1e-6)


def test_forecasts_go_out_when_p_moves_and_other_instruments_are_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = _l1(_random_stream(2000, 6))
    d = _model(tmp_path, events_from_messages(_messages(raw), 7, tick=1.0), coalesce=False)
    fc = MicroForecaster(d, {7: 1.0}, publish_delta=0.1)
    msgs = _messages(raw) + [Quote(8, 1, 1, 2, 1, 5, 5)]
    got = fc.on_messages(msgs, 0)
    assert 0 < len(got) < fc.rows_scored and all(f.instrument_id == 7 for f in got)
    ps = [f.p_up for f in got]
    for a, b in zip(ps, ps[1:], strict=False):
        assert abs(b - a) >= 0.1 or (a - 0.5) * (b - 0.5) < 0
    # a one-sided book scores nothing
    before = fc.rows_scored
    assert fc.on_messages([Quote(7, 100, 0, 101, 5, 10**12, 10**12)], 0) == []
    assert fc.rows_scored == before
