"""The components the fast replay lets lag (``engine.replay_fast``), brought up to a row.

While the runtime is idle, the simulated exchange's books and match state, exec's prices (stop
emulator, algo tops and traded volume, price-gap history), the portfolio's marks, risk's prices
and the host's last quotes are not touched per row. ``LaggingSync`` (a mixin of ``FastReplay``)
brings each of them to what the message path would have left after the rows before ``k``, from
the rows themselves (kernels of ``engine.replay_kernels``, or the components' own methods on the
few rows whose every effect counts). Each keeps its own index of the first row it has not taken.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine import replay_kernels as rk
from engine.md_columns import MdKind
from engine.price_gap import MID_HISTORY
from engine.replay_batch import RowBatch

_Q, _T = int(MdKind.QUOTE), int(MdKind.TRADE)
_PEND_CAP = 4096  # prints of one batch remembered per instrument (more: the venue takes the rows)


class LaggingSync:
    """Mixin: ``rt`` (the runtime), ``ids`` / ``slot_of`` (the host's instruments by slot),
    ``v_ids`` / ``v_slot_of`` / ``v_bufs`` (the venue's), ``lasts`` / ``pmarks`` (scratch), the
    indexes ``q_idx`` / ``p_idx`` / ``r_idx`` / ``e_idx`` / ``v_idx``, and the flags
    ``_px_moved`` (risk's prices changed) / ``_pf_moved`` (a mark changed) it sets."""

    rt: Any
    ids: list[int]
    slot_of: np.ndarray
    v_ids: list[int]
    v_slot_of: np.ndarray
    v_bufs: tuple[np.ndarray, ...]
    lasts: np.ndarray
    pmarks: np.ndarray
    q_idx: int
    p_idx: int
    r_idx: int
    e_idx: int
    v_idx: int
    _px_moved: bool
    _pf_moved: bool

    def _lasts(self, b: RowBatch, i0: int, k: int) -> np.ndarray:
        out = self.lasts
        rk.scan_lasts(
            b.kind, b.instrument_id, b.bid_px, b.bid_qty, b.ask_px, b.ask_qty, b.px, i0, k,
            self.slot_of, out,
        )  # fmt: skip
        return out

    def _sync_host_quotes(self, b: RowBatch, k: int) -> None:
        if self.q_idx >= k:
            return
        lasts = self._lasts(b, self.q_idx, k)
        quotes = self.rt.host.quotes
        for s in np.flatnonzero(lasts[:, 0] >= 0).tolist():
            quotes[self.ids[s]] = b.quote(int(lasts[s, 0]))
        self.q_idx = k

    def _sync_portfolio(self, b: RowBatch, k: int) -> None:
        if self.p_idx >= k:
            return
        if b.qtcum[k] == b.qtcum[self.p_idx]:  # deltas only: no mark moves
            self.p_idx = k
            return
        got = rk.marks(
            b.kind, b.instrument_id, b.bid_px, b.bid_qty, b.ask_px, b.ask_qty, b.px,
            self.p_idx, k, self.slot_of, self.pmarks,
        )  # fmt: skip
        if got:
            pf = self.rt.portfolio
            for s, m in enumerate(self.pmarks.tolist()):
                if m:
                    pos = pf.positions.get(self.ids[s])
                    if pos is not None and pos.mark != m:
                        pf.mark(self.ids[s], m)
                        self._pf_moved = True
        self.p_idx = k

    def _sync_risk(self, b: RowBatch, k: int) -> None:
        if self.r_idx >= k:
            return
        if b.qtcum[k] == b.qtcum[self.r_idx]:  # deltas only: risk reads no price from them
            self.r_idx = k
            return
        g = self.rt.risk
        if rk.risk_prices(
            b.kind, b.instrument_id, b.bid_px, b.bid_qty, b.ask_px, b.ask_qty, b.px,
            self.r_idx, k, g.bid, g.ask, g.last,
        ):  # fmt: skip
            self._px_moved = True
        self.r_idx = k

    def _sync_exec(self, b: RowBatch, k: int) -> None:
        """Exec's view of the rows: the stop emulator's and the algos' prices, the algos'
        traded volume, the price-gap history (``ExecEngine.on_market_data``)."""
        i0 = self.e_idx
        if i0 >= k:
            return
        ex = self.rt.exec
        if k - i0 <= 64:  # a few rows: as exec itself takes them, one by one
            for i in range(i0, k):
                self._exec_row(ex, b, i)
        else:
            self._exec_rows(ex, b, i0, k)
        ex._now = b.ts_l[k - 1]
        self.e_idx = k

    def _sync_venue(self, b: RowBatch, k: int) -> None:
        """The simulated exchange's books and match state after rows ``< k`` (no order of ours
        rests there: ``_idle``). A row the kernel cannot take goes to the venue itself."""
        i0 = self.v_idx
        if i0 >= k:
            return
        v = self.rt.venue
        if not self._load_venue():  # a flood of prints: the venue takes the rows itself
            for j in range(i0, k):
                v.on_market_data(b.message(j), b.ts_l[j])
            i0 = k
        while i0 < k:
            j = rk.venue_apply(
                b.kind, b.instrument_id, b.side, b.px, b.qty, b.bid_px, b.bid_qty, b.ask_px,
                b.ask_qty, b.seq, i0, k, self.v_slot_of, self.v_bufs, self.v_flags,
                self.v_pend, self.v_npend, self.v_cons, self.v_ncons, self.v_ignored,
            )  # fmt: skip
            self._store_venue()
            if j >= k:
                break
            v.on_market_data(b.message(j), b.ts_l[j])  # idle: it answers nothing
            i0 = j + 1
            if i0 < k and not self._load_venue():
                for jj in range(i0, k):
                    v.on_market_data(b.message(jj), b.ts_l[jj])
                break
        v._clock = max(v._clock, b.ts_l[k - 1])
        self.v_idx = k

    def _load_venue(self) -> bool:
        """The venue's per-instrument match state into the kernel's arrays (False: more
        prints pending than the kernel's table holds)."""
        v = self.rt.venue
        nv = len(self.v_ids)
        if not hasattr(self, "v_flags"):
            self.v_flags = np.zeros(nv, np.int64)
            self.v_npend = np.zeros(nv, np.int64)
            self.v_ncons = np.zeros(nv, np.int64)
            self.v_ignored = np.zeros(1, np.int64)
            self.v_pend = np.zeros((nv, _PEND_CAP, 3), np.int64)
            self.v_cons = np.zeros((nv, 16, 3), np.int64)
        for s, iid in enumerate(self.v_ids):
            inst = v._insts[iid]
            self.v_flags[s] = (
                int(bool(inst.last_was_trade))
                | int(bool(inst.seen_trade)) << 1
                | int(bool(inst.halt_reason)) << 2
            )
            pend = inst.pending_trades
            if len(pend) > _PEND_CAP - 2:
                return False
            self.v_npend[s] = len(pend)
            for n, ((side, px), q) in enumerate(pend.items()):
                self.v_pend[s, n] = (side, px, q)
            cons = inst.consumed
            if len(cons) > self.v_cons.shape[1]:
                self.v_cons = np.zeros((nv, 2 * len(cons), 3), np.int64)
            self.v_ncons[s] = len(cons)
            for n, (side, px) in enumerate(cons):
                self.v_cons[s, n] = (side, px, 1)
        self.v_ignored[0] = 0
        return True

    def _store_venue(self) -> None:
        """The kernel's arrays back into the venue's per-instrument match state."""
        v = self.rt.venue
        for s, iid in enumerate(self.v_ids):
            inst = v._insts[iid]
            f = int(self.v_flags[s])
            inst.last_was_trade = bool(f & 1)
            inst.seen_trade = bool(f & 2)
            n = int(self.v_npend[s])
            pend = self.v_pend[s, :n].tolist()
            inst.pending_trades = {(sd, px): q for sd, px, q in pend if q > 0}
            for sd, px, alive in self.v_cons[s, : int(self.v_ncons[s])].tolist():
                if not alive:
                    inst.consumed.pop((sd, px), None)
        v.ignored_market_data += int(self.v_ignored[0])
        self.v_ignored[0] = 0

    def _exec_row(self, ex: Any, b: RowBatch, i: int) -> None:
        """One row as ``ExecEngine.on_market_data`` takes it (less the venue's part)."""
        k = b.kind_l[i]
        if k == _Q:
            msg: Any = b.quote(i)
            ex._gaps.note(msg)
        elif k == _T:
            msg = b.trade(i)
        else:
            return  # a delta: nothing for exec but the venue
        ex.emulator.on_market_data(msg, msg.ts_recv)
        if ex.algo is not None:
            ex.algo.on_market_data(msg, msg.ts_event)

    def _exec_rows(self, ex: Any, b: RowBatch, i0: int, k: int) -> None:
        """Many rows: only what the last of each kind leaves (prices), every print (the algos'
        volume), the last ``MID_HISTORY`` quotes of each instrument (the price-gap history)."""
        lasts = self._lasts(b, i0, k)
        for s in np.flatnonzero(lasts[:, 0] >= 0).tolist():
            q = b.quote(int(lasts[s, 0]))
            ex.emulator.on_market_data(q, q.ts_recv)
            if ex.algo is not None:
                ex.algo.on_market_data(q, q.ts_event)
        for s in np.flatnonzero(lasts[:, 3] >= 0).tolist():
            tr = b.trade(int(lasts[s, 3]))
            ex.emulator.on_market_data(tr, tr.ts_recv)
        kind = b.kind[i0:k]
        if ex.algo is not None:  # every print counts in the volume profile
            prints = np.flatnonzero((kind == _T) & (b.qty[i0:k] > 0)) + i0
            if ex.algo._working:
                for i in prints.tolist():
                    ex.algo.on_market_data(b.trade(i), b.ts_l[i])
            elif len(prints):  # it only records them: in bulk, instruments in order of first print
                iids = b.instrument_id[prints]
                _, first = np.unique(iids, return_index=True)
                for iid in iids[np.sort(first)].tolist():
                    on = prints[iids == iid]
                    ex.algo.record_prints(iid, b.ts[on], b.qty[on])
        ok = (kind == _Q) & (b.bid_qty[i0:k] > 0) & (b.ask_qty[i0:k] > 0)
        ok &= (b.bid_px[i0:k] > 0) & (b.ask_px[i0:k] > 0)
        rows = np.flatnonzero(ok) + i0
        if len(rows):
            iids = b.instrument_id[rows]
            for iid in np.unique(iids).tolist():
                for i in rows[iids == iid][-MID_HISTORY:].tolist():
                    ex._gaps.note(b.quote(i))
