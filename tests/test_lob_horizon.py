"""Down / flat / up over a horizon: labels by hand (events and time), the always-no-change baseline
is right exactly as often as the mid stays, and a book that tells the move is read."""

from __future__ import annotations

import numpy as np

from models.lob_horizon import evaluate_horizon, format_horizon, horizon_labels
from ops.micro_cmds import parse_horizons
from tests.test_lob_features import _signal_stream


def test_horizon_labels_by_events_and_by_time() -> None:
    mid = np.array([10, 10, 11, np.nan, 9, 9])
    ts = np.array([0, 5, 10, 15, 20, 25]) * 10**6
    y, ok = horizon_labels(mid, ts, events=2)  # a one-sided book (NaN) carries the last mid
    assert y[:3].tolist() == [2, 2, 0] and ok.tolist() == [1, 1, 1, 0, 0, 0]
    y, ok = horizon_labels(mid, ts, dt_ns=10 * 10**6)
    # from each event, the mid at the last event within 10 ms
    assert y[[0, 1, 2, 4]].tolist() == [2, 2, 0, 1] and ok.tolist() == [1, 1, 1, 0, 1, 0]


def test_no_change_is_right_as_often_as_the_mid_stays_and_the_book_is_read() -> None:
    ev = _signal_stream(8000, 4.0, 3)
    r = evaluate_horizon(ev, events=3)
    rows = {x.name: x for x in r.rows}
    assert rows["always no change"].accuracy == r.shares[1]
    assert rows["imbalance softmax"].on_change > 0.6
    assert rows["softmax (all features)"].dm in ("better", "no significant difference")
    assert rows["imbalance softmax"].log_loss < rows["always no change"].log_loss
    assert "next 3 events" in format_horizon(r)


def test_horizons_parse_events_and_milliseconds() -> None:
    assert parse_horizons("10, 1000ms") == [(10, 0), (0, 10**9)]
    assert parse_horizons("") == []
    for bad in ("0", "-5ms", "x"):
        try:
            parse_horizons(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
