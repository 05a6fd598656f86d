"""Dirty LOBSTER pairs (engine.lobster_checked): torn, short, mismatched or garbage files replay
with each bad line counted by reason — or stop with a clear error — never with a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.lobster import iter_book_deltas, snapshot_from_row, write_lobster
from engine.md_rejects import BadRowError, RejectCounter
from engine.messages import BookSnapshot
from engine.sources.replay import ReplaySource
from tests.test_engine_e2e import gekko, write_config
from tests.test_lobster import simulate_lobster

LEVELS, N = 5, 400
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "lobster"


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return simulate_lobster(N, LEVELS, seed=5)


def _write(tmp_path: Path, msgs: np.ndarray, books: np.ndarray) -> tuple[Path, Path]:
    mp, op = tmp_path / "X_message_5.csv", tmp_path / "X_orderbook_5.csv"
    write_lobster(mp, op, msgs, books)
    return mp, op


def _edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(fn(lines)))


def _replay(mp: Path, op: Path, policy: str = "skip") -> tuple[list, ReplaySource]:
    src = ReplaySource.from_lobster(
        mp, op, LEVELS, instrument_id=1, rejects=RejectCounter(policy, log_first=0)
    )
    return list(src), src


def _reference(msgs: np.ndarray, books: np.ndarray) -> list:
    return list(
        iter_book_deltas(msgs, books, instrument_id=1, include_trades=True, include_snapshot=True)
    )


def _accounted(src: ReplaySource) -> None:
    assert src.lobster.rows == src.lobster.accepted + sum(src.rejected.values())


def test_clean_pair_replays_as_before(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    out, src = _replay(*_write(tmp_path, msgs, books))
    assert out == _reference(msgs, books) and src.rejected == {}
    _accounted(src)


def test_torn_last_line_is_truncated(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    mp.write_bytes(mp.read_bytes()[:-9])  # a write cut off mid-line: no newline at the end
    out, src = _replay(mp, op)
    assert src.rejected == {"truncated": 1}
    assert out == _reference(msgs[:-1], books[:-1])
    _accounted(src)


def test_bytes_that_are_not_text_cost_their_line_only(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    """A line torn in the middle of a UTF-8 character (or any non-ASCII byte) is that line's
    reject: the reader used to fail the whole file (pyarrow could not show the bad row)."""
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    mp.write_bytes(mp.read_bytes()[:-9] + b"\xc3")  # a write torn mid-character
    lines = op.read_bytes().split(b"\n")
    lines[49] = b"garbage \xff"
    op.write_bytes(b"\n".join(lines))
    out, src = _replay(mp, op)
    assert src.rejected == {"truncated": 1, "malformed_row": 1}
    _accounted(src)


@pytest.mark.parametrize("short", ["message", "orderbook"])
def test_one_file_shorter_than_the_other(tmp_path: Path, pair, short: str) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    _edit(mp if short == "message" else op, lambda lines: lines[:-10])
    out, src = _replay(mp, op)
    assert src.rejected == {"truncated": 10}
    assert out == _reference(msgs[:-10], books[:-10])
    _accounted(src)


def test_garbage_lines_are_counted_and_the_book_resynced(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)

    def msg_edit(lines: list[str]) -> list[str]:
        lines[99] = "hello world\n"  # line 100: not 6 fields
        f = lines[199].split(",")
        lines[199] = ",".join([f[0], f[1], f[2], f[3], "abc", f[5]])  # line 200: a bad cell
        return lines

    _edit(mp, msg_edit)
    _edit(op, lambda lines: [*lines[:299], "1,2,3\n", *lines[300:]])  # line 300: 3 fields
    out, src = _replay(mp, op)
    assert src.rejected == {"malformed_row": 2, "unparsable": 1}
    _accounted(src)
    ref = _reference(msgs[:99], books[:99])
    assert out[: len(ref)] == ref  # up to the first bad line, exactly the clean replay
    # after each bad line the next good one resyncs the book from its reference row
    snaps = [m for m in out if isinstance(m, BookSnapshot)]
    assert len(snaps) == 4
    for snap, k in zip(snaps[1:], (100, 200, 300), strict=True):
        t = snap.ts_event
        want = snapshot_from_row(books[k], instrument_id=1, ts_event=t, ts_recv=t, seq=snap.seq)
        assert snap == want
    seqs = [m.seq for m in out if hasattr(m, "seq")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # no gap a reader could trip on


def test_impossible_messages_are_counted_by_reason(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    m = msgs.copy()
    m["type"][10] = 9
    changing = np.flatnonzero((m["type"] >= 1) & (m["type"] <= 4))
    changing = changing[(changing > 11) & (changing != 120) & (changing != 121)]
    a, b, c, d = changing[20], changing[40], changing[60], changing[80]
    m["size"][a] = -5
    m["direction"][b] = 0
    m["price"][c] += 7  # off the one-cent grid
    m["time_ns"][d] = m["time_ns"][d - 1] - 10**9  # a second back in time
    bk = books.copy()
    bk[120, 0], bk[120, 2] = 10_000 * 100, 10_050 * 100  # best bid above best ask
    out, src = _replay(*_write(tmp_path, m, bk))
    assert src.rejected == {
        "bad_message": 3,
        "bad_size": 1,
        "out_of_order_time": 1,
        "crossed": 1,
    }
    _accounted(src)
    ts = [x.ts_event for x in out]
    assert ts == sorted(ts)


def test_no_lobster_file_at_all_is_a_clear_error(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    with pytest.raises(ValueError, match=r"X_orderbook_5\.csv.*levels"):
        ReplaySource.from_lobster(mp, op, LEVELS + 1, instrument_id=1)
    mp.write_text("this is not,a LOBSTER file\n" * 50)
    with pytest.raises(ValueError, match=r"X_message_5\.csv.*message file"):
        ReplaySource.from_lobster(mp, op, LEVELS, instrument_id=1)
    with pytest.raises(ValueError, match="not found"):
        ReplaySource.from_lobster(tmp_path / "nope.csv", op, LEVELS, instrument_id=1)


def test_fail_policy_stops_at_the_first_bad_line_naming_it(tmp_path: Path, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    _edit(op, lambda lines: lines[:-3])
    src = ReplaySource.from_lobster(mp, op, LEVELS, instrument_id=1, rejects=RejectCounter("fail"))
    got = []
    with pytest.raises(BadRowError, match=rf"X_orderbook_5\.csv row {N - 2}: truncated") as e:
        for x in src:
            got.append(x)
    assert e.value.row == N - 2 and e.value.reason == "truncated"
    assert got == _reference(msgs[:-3], books[:-3])  # everything before it was replayed


GARBAGE = st.text(
    alphabet=st.characters(blacklist_characters='\n\r"', blacklist_categories=("Cs",)),
    max_size=40,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.booleans(), st.integers(0, N + 5), st.booleans(), GARBAGE), max_size=8
    ),
    cut=st.integers(0, 30),
)
def test_random_garbage_never_crashes_and_every_line_is_accounted(
    tmp_path: Path,
    pair,  # type: ignore[no-untyped-def]
    edits: list,
    cut: int,
) -> None:
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    for in_msg, at, replace, text in edits:
        path = mp if in_msg else op

        def edit(lines: list[str], at=at, replace=replace, text=text) -> list[str]:
            i = min(at, len(lines))
            return [*lines[:i], text + "\n", *lines[i + int(replace) :]]

        _edit(path, edit)
    mp.write_bytes(mp.read_bytes()[: max(0, len(mp.read_bytes()) - cut)])
    try:
        out, src = _replay(mp, op)
    except ValueError as e:  # only "this is no LOBSTER file", which needs every line bad
        assert "no line reads as" in str(e)
        return
    _accounted(src)
    ts = [x.ts_event for x in out]
    assert ts == sorted(ts)


def test_truncated_real_lobster_day_if_present(tmp_path: Path) -> None:
    pairs = sorted(REAL.glob("*_message_10.csv")) if REAL.is_dir() else []
    if not pairs:
        pytest.skip(f"no real LOBSTER data (a *_message_10.csv pair) in {REAL}")
    mp = tmp_path / "m.csv"
    op = tmp_path / "o.csv"
    shutil.copy(pairs[0], mp)
    shutil.copy(pairs[0].with_name(pairs[0].name.replace("_message_", "_orderbook_")), op)
    n = len(op.read_text().splitlines())
    _edit(op, lambda lines: lines[:-25])
    mp.write_bytes(mp.read_bytes()[:-5])
    src = ReplaySource.from_lobster(mp, op, 10, instrument_id=1)
    out = list(src)
    assert src.rejected == {"truncated": 25}
    assert src.lobster.rows == n and src.lobster.accepted == n - 25
    assert out and isinstance(out[0], BookSnapshot)


def test_backtest_of_a_truncated_lobster_pair(tmp_path: Path, engine_id: str, pair) -> None:  # type: ignore[no-untyped-def]
    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    mp.write_bytes(mp.read_bytes()[:-9])
    _edit(op, lambda lines: [*lines[:49], "garbage\n", *lines[50:]])
    cfg = write_config(
        tmp_path,
        engine_id,
        market=(
            f'source = "replay"\nreplay_lobster_messages = "{mp}"\n'
            f'replay_lobster_orderbook = "{op}"\nreplay_lobster_levels = {LEVELS}'
        ),
    )
    out = tmp_path / "bt.json"
    r = gekko("backtest", "--config", str(cfg), "--json", str(out), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["md_rejected_by_reason"] == {"truncated": 1, "malformed_row": 1}
    assert "market data rejected: 2 (malformed_row 1, truncated 1)" in r.stdout
    # a file that is no LOBSTER file: a clear configuration error, no traceback
    mp.write_text("garbage\n" * 10)
    r = gekko("backtest", "--config", str(cfg), timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "X_message_5.csv" in r.stderr


@pytest.mark.parametrize(("tick", "divisor"), [(0.01, 100), (0.001, 10), (0.0001, 1)])
def test_config_replay_prices_lobster_in_the_instruments_ticks(
    tmp_path: Path,
    engine_id: str,
    pair,  # type: ignore[no-untyped-def]
    tick: float,
    divisor: int,
) -> None:
    """LOBSTER prices are dollars x 10000: a tick of 0.001 is 10 of them (the replay divided by
    1000 there, a factor of 100 off, when it assumed a 0.01 tick scaled the wrong way)."""
    from ops.config import load_config
    from procs.build import market_source

    msgs, books = pair
    mp, op = _write(tmp_path, msgs, books)
    path = write_config(
        tmp_path,
        engine_id,
        market=(
            f'source = "replay"\nreplay_lobster_messages = "{mp}"\n'
            f'replay_lobster_orderbook = "{op}"\nreplay_lobster_levels = {LEVELS}\n'
            'replay_lobster_symbol = "AAPL"'
        ),
    )
    text = path.read_text().replace("tick_size = 0.01", f"tick_size = {tick}", 1)
    path.write_text(text)
    first = next(iter(market_source(load_config(path))))
    assert isinstance(first, BookSnapshot)
    assert first.bid_px[0] * divisor == int(books[0][2])  # LOBSTER's best bid, in its units
