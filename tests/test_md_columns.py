"""engine.md_columns: rows and messages convert both ways without loss."""

from __future__ import annotations

import numpy as np
import pytest

from engine.md_columns import (
    MD_DTYPE,
    MdKind,
    empty,
    from_messages,
    is_columnar,
    to_messages,
)
from engine.messages import BookDelta, BookSnapshot, Quote, Trade


def _msgs() -> list[object]:
    return [
        Quote(3, 100, 5, 101, 7, 10, 10, 1),
        Trade(3, 101, 2, 1, 11, 11, 42),
        BookDelta(4, -1, 99, 0, 12, 12, 9),
        Trade(4, 98, 1, -1, 13, 13, 0),
        BookDelta(4, 1, 97, 30, 14, 14, 10),
    ]


def test_round_trip_messages_rows_messages() -> None:
    rows = from_messages(_msgs())
    assert rows.dtype == MD_DTYPE
    assert rows["kind"].tolist() == [MdKind.QUOTE, MdKind.TRADE, MdKind.DELTA, MdKind.TRADE, 3]
    assert rows["seq"].tolist() == [1, 42, 9, 0, 10]
    assert rows["bid_px"].tolist() == [100, 0, 0, 0, 0]
    assert list(to_messages(rows)) == _msgs()


def test_empty_and_errors() -> None:
    assert len(empty(0)) == 0 and (empty(3)["px"] == 0).all()
    assert len(from_messages([])) == 0 and list(to_messages(empty(0))) == []
    with pytest.raises(TypeError):
        from_messages([BookSnapshot(1, [1], [1], [2], [1], 0, 0)])
    bad = empty(1)
    bad["kind"] = 9
    with pytest.raises(ValueError):
        list(to_messages(bad))


def test_is_columnar() -> None:
    class Src:
        def preamble(self) -> list[object]:
            return []

        def batches(self):  # noqa: ANN201
            yield from_messages(_msgs())

        def __iter__(self):  # noqa: ANN204
            yield from to_messages(np.concatenate(list(self.batches())))

    assert is_columnar(Src()) and not is_columnar([1, 2]) and not is_columnar(iter(()))
    no = Src()
    no.columnar = False  # type: ignore[attr-defined]
    assert not is_columnar(no)
