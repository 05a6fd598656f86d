"""engine.md_rejects.validate_rows: over columnar rows, exactly MdValidator's verdicts (the
same rows kept, the same reasons counted at the same rows, the same BadRowError)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.md_columns import MD_DTYPE, MdKind, empty, to_messages
from engine.md_rejects import BadRowError, MdValidator, RejectCounter, validate_rows

IDS = (1, 2)


class _Log(RejectCounter):
    """A counter that also keeps each rejection's (reason, row)."""

    def __init__(self, policy: str = "skip") -> None:
        super().__init__(policy, log_first=0)
        self.seen: list[tuple[str, int]] = []

    def reject(self, reason: str, where: str = "", row: int = -1, detail: str = "") -> None:
        super().reject(reason, where, row, detail)
        self.seen.append((reason, row))


small = st.integers(-2, 6)
row = st.tuples(
    st.integers(0, 12),  # ts_event: often equal or going back
    st.sampled_from((1, 2, 3)),  # instrument 3 is unknown
    st.sampled_from((1, 1, 2, 3, 3, 0, 9)),  # kind: some unknown
    st.sampled_from((-1, 0, 1)),
    small, small, small, small, small, small,
)  # fmt: skip


def _rows(data: list[tuple[int, ...]]) -> np.ndarray:
    rows = empty(len(data))
    for name, col in zip(
        ("ts_event", "instrument_id", "kind", "side", "px", "qty"),
        zip(*data, strict=True),
        strict=False,
    ):
        rows[name] = col
    for name, k in (("bid_px", 4), ("bid_qty", 5), ("ask_px", 6), ("ask_qty", 7)):
        rows[name] = [r[k] + (3 if name == "ask_px" else 0) for r in data]
    return rows


def _reference(rows: np.ndarray) -> tuple[list[int], list[tuple[str, int]]]:
    """Row by row through MdValidator (a row of no known kind: bad_message)."""
    v = MdValidator(IDS)
    keep, seen = [], []
    for i in range(len(rows)):
        if rows["kind"][i] not in (MdKind.QUOTE, MdKind.TRADE, MdKind.DELTA):
            seen.append(("bad_message", i))
            continue
        reason = v.check(next(to_messages(rows[i : i + 1])))
        if reason is None:
            keep.append(i)
        else:
            seen.append((reason, i))
    return keep, seen


@settings(max_examples=150, deadline=None)
@given(st.lists(row, max_size=40), st.integers(1, 40))
def test_rows_get_the_validators_verdicts(data: list[tuple[int, ...]], cut: int) -> None:
    rows = _rows(data) if data else empty(0)
    keep, seen = _reference(rows)
    log, last = _Log(), {}
    parts = [
        validate_rows(rows[:cut], IDS, log, last_quote_ts=last),
        validate_rows(rows[cut:], IDS, log, last_quote_ts=last, offset=min(cut, len(rows))),
    ]
    assert np.array_equal(np.concatenate(parts), rows[keep])
    assert log.seen == seen


def test_fail_policy_raises_at_the_first_bad_row() -> None:
    rows = empty(3)
    rows["instrument_id"], rows["kind"], rows["px"], rows["qty"] = 1, MdKind.TRADE, 5, 1
    rows["qty"][1] = 0
    with pytest.raises(BadRowError, match="feed row 11: bad_size"):
        validate_rows(rows, IDS, RejectCounter("fail"), offset=10)
    ok = validate_rows(rows[[0, 2]], IDS, RejectCounter("fail"))
    assert ok.dtype == MD_DTYPE and len(ok) == 2
