"""engine.md_rejects: the reject vocabulary, sparse logging, the fail policy, the feed's checks."""

from __future__ import annotations

import logging

import pytest

from engine.md_rejects import (
    REASONS,
    BadRowError,
    MdValidator,
    RejectCounter,
    validated,
)
from engine.messages import (
    Bar,
    BookDelta,
    ExchangeStatus,
    ExchangeStatusKind,
    Quote,
    Trade,
)
from procs.runtime import COUNTERS, MD_REJECT_COUNTERS


def test_every_reason_has_a_feed_counter() -> None:
    assert set(MD_REJECT_COUNTERS) == set(REASONS)
    assert set(MD_REJECT_COUNTERS.values()) <= set(COUNTERS["feed"])


def test_counter_logs_the_first_few_then_only_counts(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, int]] = []
    c = RejectCounter(log_first=3, sink=lambda r, n: seen.append((r, n)))
    with caplog.at_level(logging.WARNING, logger="gekko.md"):
        for row in range(1000):
            c.reject("crossed" if row % 2 else "nan_value", "quotes file q.csv", row + 2)
    assert c.counts == {"crossed": 500, "nan_value": 500} and c.total == 1000
    assert len(seen) == 1000
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 4  # three rows, then one line saying the rest are only counted
    assert msgs[0] == "market data rejected: quotes file q.csv row 2: nan_value"
    assert "counted, not logged" in msgs[3]
    assert c.summary() == "1000 (crossed 500, nan_value 500)"
    with pytest.raises(KeyError):
        c.reject("no_such_reason")


def test_fail_policy_raises_naming_file_row_and_reason() -> None:
    c = RejectCounter("fail")
    with pytest.raises(BadRowError) as e:
        c.reject("truncated", "LOBSTER file m.csv", 17)
    msg = str(e.value)
    assert "LOBSTER file m.csv row 17: truncated" in msg and 'on_bad_row = "fail"' in msg
    assert c.total == 0
    with pytest.raises(ValueError, match="on_bad_row"):
        RejectCounter("ignore")


def q(iid: int, bid: int, ask: int, ts: int, bq: int = 1, aq: int = 1) -> Quote:
    return Quote(iid, bid, bq, ask, aq, ts, ts)


def test_feed_checks_of_live_data() -> None:
    v = MdValidator([1, 2])
    assert v.check(q(1, 100, 101, 10)) is None
    assert v.check(q(1, 100, 100, 11)) == "crossed"  # locked
    assert v.check(q(1, 102, 101, 11)) == "crossed"
    assert v.check(q(1, 0, 101, 11)) is None  # an empty side is not crossed
    assert v.check(q(1, 100, 101, 9)) == "out_of_order_time"  # older than one published
    assert v.check(q(2, 100, 101, 9)) is None  # per instrument
    assert v.check(q(1, -1, 101, 12)) == "non_positive_price"
    assert v.check(q(1, 100, 101, 12, bq=-1)) == "bad_size"
    assert v.check(q(3, 100, 101, 12)) == "unknown_instrument"
    assert v.check(Trade(1, 0, 1, 1, 12, 12)) == "non_positive_price"
    assert v.check(Trade(1, 100, 0, 1, 12, 12)) == "bad_size"
    assert v.check(BookDelta(1, 1, 100, -1, 12, 12)) == "bad_size"
    assert v.check(BookDelta(1, 1, 100, 0, 12, 12)) is None  # a level removed
    assert v.check(Bar(1, 0, 1, 100, 100, 0, 100, 1)) == "non_positive_price"
    assert v.check(ExchangeStatus(-1, ExchangeStatusKind.HALTED, "", 1, 1)) is None
    assert v.check(ExchangeStatus(1, 99, "", 1, 1)) == "bad_status"
    assert v.check(object()) is None  # not market data (a forecast, a control): not ours


def test_validated_counts_what_it_drops() -> None:
    c = RejectCounter(log_first=0)
    msgs = [q(1, 100, 101, 1), q(1, 101, 100, 2), q(7, 100, 101, 3), q(1, 100, 101, 4)]
    out = list(validated(msgs, MdValidator([1]), c))
    assert [m.ts_event for m in out] == [1, 4]
    assert c.counts == {"crossed": 1, "unknown_instrument": 1}
