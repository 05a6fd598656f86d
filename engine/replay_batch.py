"""A batch of market-data rows for the fast replay (``engine.replay_fast``): the
``engine.md_columns.MD_DTYPE`` columns as contiguous arrays for the kernels
(``engine.replay_kernels``) and as Python lists for the loops that hand rows to strategies, and
the row as a message where a component needs one."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.md_columns import MdKind
from engine.messages import BookDelta, Quote, Trade

_Q, _T = int(MdKind.QUOTE), int(MdKind.TRADE)
_COLS = ("kind", "instrument_id", "side", "px", "qty", "bid_px", "bid_qty", "ask_px", "ask_qty")


class RowBatch:
    """One batch of rows as contiguous columns (for the kernels) and lists (for Python)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.n = len(rows)
        self.ts = np.ascontiguousarray(rows["ts_event"])
        self.seq = np.ascontiguousarray(rows["seq"])
        for name in _COLS:
            setattr(self, name, np.ascontiguousarray(rows[name]))
        self.ts_l: list[int] = self.ts.tolist()
        self.kind_l: list[int] = self.kind.tolist()
        self.iid_l: list[int] = self.instrument_id.tolist()
        self.seq_l: list[int] = self.seq.tolist()

    def __getattr__(self, name: str) -> list[int]:
        """The other columns as lists, made when first asked for (a quote stream never needs
        ``px_l``, a delta stream never ``bpx_l``)."""
        if name in ("bpx_l", "bqty_l", "apx_l", "aqty_l"):
            self.bpx_l, self.bqty_l = self.bid_px.tolist(), self.bid_qty.tolist()
            self.apx_l, self.aqty_l = self.ask_px.tolist(), self.ask_qty.tolist()
        elif name in ("side_l", "px_l", "qty_l"):
            self.side_l, self.px_l, self.qty_l = (
                self.side.tolist(),
                self.px.tolist(),
                self.qty.tolist(),
            )
        else:
            raise AttributeError(name)
        return self.__dict__[name]

    def quote(self, i: int) -> Quote:
        t = self.ts_l[i]
        return Quote(
            self.iid_l[i],
            self.bpx_l[i],
            self.bqty_l[i],
            self.apx_l[i],
            self.aqty_l[i],
            t,
            t,
            self.seq_l[i],
        )

    def trade(self, i: int) -> Trade:
        t = self.ts_l[i]
        return Trade(
            self.iid_l[i], self.px_l[i], self.qty_l[i], self.side_l[i], t, t, self.seq_l[i]
        )

    def message(self, i: int) -> Any:
        k = self.kind_l[i]
        if k == _Q:
            return self.quote(i)
        if k == _T:
            return self.trade(i)
        t = self.ts_l[i]
        return BookDelta(
            self.iid_l[i], self.side_l[i], self.px_l[i], self.qty_l[i], t, t, self.seq_l[i]
        )
