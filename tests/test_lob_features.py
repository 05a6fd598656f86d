"""Microstructure features and the next-change direction evaluation: the streamed rows equal the
batch ones, order-flow imbalance by hand, bad books refused, same-time messages coalesced, the
target by hand, signal found where it exists and not where it does not, and on a real LOBSTER
day the issue's bar (direction >= 60 % with an interval above 55 %, log loss below imbalance)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.messages import BookDelta, Quote, Trade
from models.lob_data import BookEvents, EventBuilder, events_from_messages, lobster_days
from models.lob_eval import evaluate_stream, next_change
from models.lob_features import FEATURES, N_FEATURES, features_of_events, new_state, step

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
F = {name: i for i, name in enumerate(FEATURES)}


def _events(rows: list[tuple], tick: float = 1.0, name: str = "t") -> BookEvents:
    """rows: (ts, bid_px, bid_sz, ask_px, ask_sz, trade) at one level."""
    a = np.array(rows, dtype=np.float64)
    col = lambda k: np.ascontiguousarray(a[:, k : k + 1].astype(np.int64))  # noqa: E731
    return BookEvents(name, a[:, 0].astype(np.int64), col(1), col(2), col(3), col(4), a[:, 5], tick)


def _random_stream(n: int, seed: int, levels: int = 3) -> BookEvents:
    rng = np.random.default_rng(seed)
    mid = 1000 + np.cumsum(rng.choice([-1, 0, 0, 0, 1], n))
    spread = rng.choice([1, 1, 2, 3], n)
    bid = (mid - spread // 2)[:, None] - np.arange(levels)[None, :]
    ask = (mid - spread // 2 + spread)[:, None] + np.arange(levels)[None, :]
    bsz, asz = rng.integers(0, 50, (n, levels)), rng.integers(0, 50, (n, levels))
    bsz[:, 0] += 1
    asz[:, 0] += 1
    trade = np.where(rng.random(n) < 0.2, rng.integers(-20, 21, n), 0).astype(np.float64)
    ts = np.cumsum(rng.integers(1, 10**7, n))
    return BookEvents("r", ts, bid, bsz, ask, asz, trade, 1.0)


def test_streaming_one_event_at_a_time_gives_the_batch_rows_bit_for_bit() -> None:
    ev = _random_stream(3000, 1)
    batch, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    st, ring = new_state()
    row = np.empty(N_FEATURES)
    for i in range(len(ev)):
        ok = step(
            st, ring, ev.ts[i], ev.bid_px[i], ev.bid_sz[i], ev.ask_px[i], ev.ask_sz[i],
            ev.trade[i], ev.tick, row,
        )  # fmt: skip
        assert ok == valid[i]
        np.testing.assert_array_equal(row, batch[i])
    assert valid.all() and np.isfinite(batch).all()


def test_order_flow_imbalance_and_imbalances_by_hand() -> None:
    ev = _events(
        [
            (1, 100, 10, 103, 10, 0),  # first event: no increment
            (2, 100, 15, 103, 10, 0),  # bid queue +5
            (3, 101, 4, 103, 10, 0),  # a better bid of 4
            (4, 101, 4, 103, 6, -4),  # 4 taken at the ask (the trade's sign as given)
            (5, 101, 4, 102, 3, 0),  # a better ask: its queue counts against
        ]
    )
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    assert valid.all()
    e = [0.0, 5.0, 4.0, 4.0, -3.0]  # Cont-Kukanov-Stoikov increments
    depth = 20.0
    for i in range(1, 5):
        depth += 0.01 * (ev.bid_sz[i, 0] + ev.ask_sz[i, 0] - depth)
        assert x[i, F["ofi_1"]] == pytest.approx(e[i] / depth)
        assert x[i, F["ofi_10"]] == pytest.approx(sum(e[: i + 1]) / depth)
    assert x[1, F["imbalance_1"]] == pytest.approx(5 / 25)
    assert x[4, F["trade_sign_ewma"]] == pytest.approx(-0.2)
    assert x[3, F["trade_flow"]] < 0 and x[2, F["trade_flow"]] == 0
    assert x[2, F["last_mid_move"]] == 1.0 and x[2, F["bid_queue_left"]] == 1.0
    assert x[1, F["bid_queue_left"]] == 1.0
    assert x[1, F["log_ms_since_trade"]] == 10.0  # no trade yet


def test_a_one_sided_or_crossed_book_gives_no_row_and_leaves_the_state() -> None:
    ev = _events(
        [
            (1, 100, 10, 102, 10, 0),
            (2, 100, 0, 102, 10, 0),  # no bid
            (3, 103, 5, 102, 10, 0),  # crossed
            (4, 100, 12, 102, 10, 0),
        ]
    )
    x, valid = features_of_events(
        ev.ts, ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz, ev.trade, ev.tick
    )
    assert valid.tolist() == [True, False, False, True]
    assert np.isnan(x[1]).all() and np.isnan(x[2]).all()
    depth = 20.0 + 0.01 * (22 - 20.0)
    assert x[3, F["ofi_1"]] == pytest.approx(2 / depth)  # against the last good touch


def test_same_time_messages_are_one_event_with_their_trades_summed() -> None:
    ev = _events(
        [
            (1, 100, 10, 102, 10, 0),
            (2, 100, 10, 102, 6, 4),
            (2, 100, 10, 102, 1, 5),
            (2, 100, 10, 103, 7, 1),
            (3, 100, 11, 103, 7, 0),
        ]
    )
    c = ev.coalesced()
    assert c.ts.tolist() == [1, 2, 3]
    assert c.trade.tolist() == [0, 10, 0]
    assert c.ask_px[:, 0].tolist() == [102, 103, 103] and c.ask_sz[1, 0] == 7


def test_the_event_builder_turns_quotes_deltas_and_trades_into_events() -> None:
    msgs = [
        Quote(1, 100, 5, 102, 7, 10, 10),
        Trade(2, 50, 1, 1, 11, 11),  # another instrument: ignored
        Trade(1, 102, 3, 1, 12, 12),
        Trade(1, 100, 2, -1, 13, 13),
    ]
    ev = events_from_messages(msgs, 1, tick=1.0)
    assert ev.ts.tolist() == [10, 12, 13] and ev.trade.tolist() == [0, 3, -2]
    assert ev.bid_px[:, 0].tolist() == [100, 100, 100] and ev.ask_sz[:, 0].tolist() == [7, 7, 7]
    b = EventBuilder(1, levels=2)
    for side, px, qty in ((1, 99, 4), (1, 100, 6), (-1, 101, 3), (-1, 103, 8)):
        b.on_message(BookDelta(1, side, px, qty, 20, 20))
    assert b.bid_px.tolist() == [100, 99] and b.bid_sz.tolist() == [6, 4]
    assert b.ask_px.tolist() == [101, 103] and b.ask_sz.tolist() == [3, 8]


def test_the_next_change_target_by_hand() -> None:
    mid = np.array([10, 10, 11, np.nan, 11, 9, 9])
    direction, at = next_change(mid)
    assert direction.tolist() == [1, 1, -1, -1, -1, 0, 0]
    assert at.tolist() == [2, 2, 5, 5, 5, -1, -1]


def _signal_stream(n: int, strength: float, seed: int) -> BookEvents:
    """The mid's next move is up with probability sigmoid(strength * touch imbalance); the
    book stays as it is until the mid moves."""
    rng = np.random.default_rng(seed)
    ts, bid, bsz, ask, asz = [], [], [], [], []
    mid = 1000
    b, a = 50, 50
    for i in range(n):
        ts.append(i * 1000)
        bid.append(mid - 1)
        ask.append(mid + 1)
        bsz.append(b)
        asz.append(a)
        if rng.random() < 0.3:  # the mid moves after this event, then a new book
            p = 1 / (1 + np.exp(-strength * (b - a) / (b + a)))
            mid += 1 if rng.random() < p else -1
            b, a = int(rng.integers(1, 100)), int(rng.integers(1, 100))
    col = lambda v: np.array(v, np.int64)[:, None]  # noqa: E731
    return BookEvents("s", np.array(ts), col(bid), col(bsz), col(ask), col(asz), np.zeros(n), 1.0)


def test_signal_is_found_where_it_exists_and_not_invented_where_it_does_not() -> None:
    strong = evaluate_stream(_signal_stream(6000, 4.0, 1), seeds=())
    rows = {r.name: r for r in strong.rows}
    assert rows["imbalance logit"].ci[0] > 0.6
    assert rows["imbalance logit"].log_loss < rows["coin (0.5)"].log_loss
    assert rows["last-move sign"].dm_verdict == "worse"
    none = evaluate_stream(_signal_stream(6000, 0.0, 2), seeds=())
    for r in none.rows:
        assert r.ci[0] < 0.5 < r.ci[1] or r.name == "coin (0.5)", r
        assert r.dm_verdict != "better", r


def test_on_a_real_lobster_day_the_book_beats_the_imbalance_baseline_out_of_sample() -> None:
    days = lobster_days(REAL_DATA / "lobster") if REAL_DATA.exists() else {}
    if "AMZN-L1" not in days:
        pytest.skip(f"no AMZN LOBSTER day under {REAL_DATA} (no shared data checkout)")
    from models.lob_data import lobster_events

    r = evaluate_stream(lobster_events(*days["AMZN-L1"]).coalesced(), seeds=())
    rows = {s.name: s for s in r.rows}
    ours, imb = rows["logit (all features)"], rows["imbalance logit"]
    assert ours.accuracy >= 0.60 and ours.ci[0] > 0.55, ours
    assert ours.log_loss < imb.log_loss and ours.dm_verdict == "better", ours
    assert r.groups_test > 5000  # the later ~30 % of the day, never fitted on


def test_micro_eval_refuses_no_data_and_a_bad_path(tmp_path: Path) -> None:
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "ops.cli", "micro-eval", *a], capture_output=True, text=True
    )
    r = run()
    assert r.returncode == 2 and "--lobster" in r.stderr
    bad = tmp_path / "x.csv"
    bad.write_text("1,2\n")
    r = run("--lobster", str(bad))
    assert r.returncode == 2 and "orderbook" in r.stderr
