"""The fast replay: a columnar source through ``InlineRuntime`` doing per row only what it needs.

Why: the exact path (``engine.backtest``) turns every row into a message and walks it through
the venue, exec, the portfolio, the strategy host and risk, although while nothing of ours is
working at the venue almost all of that is book keeping only the latest row decides. Here, while
the runtime is *idle* (nothing queued, no open order, no venue request or event pending, no algo
working), rows are taken as arrays:

- the strategy host's books follow the deltas in a numba kernel (``engine.replay_kernels``) on the
  books' own buffers, stopping at the rows a strategy subscribed to (``Strategy.subscriptions``),
  which are handed to the strategies through bound methods, as ``StrategyHost.dispatch`` would;
- the venue's books, exec's prices (price-gap history, stop emulator, algo tops and volume), the
  portfolio's marks and risk's prices lag behind and are brought up to date from the rows
  (``engine.replay_sync``) when something needs them: risk's refresh (every ``refresh_ns``), an equity
  sample (every ``equity_interval_ns``), and above all whenever the exact machinery must run;
- the exact machinery runs from the row where the runtime stops being idle — a strategy sent an
  intent, risk published something, a control, a timer or a forecast is due — with every
  component synced, row by row through ``InlineRuntime``'s own ``_step`` / ``_source_item``, until
  it is idle again.

So orders, fills, positions and P&L are those of the exact path (tests/test_replay_fast.py
compares them). What differs: ``wall_ns_per_tick`` is the batch's average per row. Cases it does
not take (another venue than ``SimExchange``, a feed latency, a venue with a durable record, a
source that is not columnar) run the exact path; ``fast_unsupported`` says why.
"""

from __future__ import annotations

import itertools
import time
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

import numpy as np

from engine import replay_kernels as rk
from engine.book import _apply_delta_nb
from engine.enums import InstrumentKind
from engine.md_columns import MdKind, is_columnar
from engine.messages import Quote
from engine.replay_batch import RowBatch
from engine.replay_sync import LaggingSync

if TYPE_CHECKING:
    from engine.backtest import InlineRuntime

_Q, _T, _D = int(MdKind.QUOTE), int(MdKind.TRADE), int(MdKind.DELTA)
_MAX_ID = 1 << 20  # instrument ids above this: the exact path (the slot tables are arrays)


def fast_unsupported(rt: InlineRuntime, source: object) -> str:
    """Why ``rt`` cannot replay ``source`` on the fast path ("" when it can)."""
    from engine.venues.sim import SimExchange

    odd = [i.symbol for i in rt.instruments if i.kind != InstrumentKind.SPOT]
    if odd:  # funding, expiry, resolution, margin: the simulator's accounts run on messages
        return f"instruments that are not spot ({', '.join(odd[:3])}): the exact path"
    if not is_columnar(source):
        return "the source is not columnar"
    if type(rt.venue) is not SimExchange:
        return f"the venue is a {type(rt.venue).__name__}, not the simulated exchange"
    if rt.venue._record is not None:
        return "the simulated exchange keeps a durable record"
    if rt.feed_latency_ns:
        return "a feed latency is set (the fast path replays with none)"
    if rt.risk_stage.returns is not None:
        return "risk samples returns ([backtest] risk_returns: its refreshes run on every price)"
    ids = rt.instruments.ids
    if ids and (min(ids) < 0 or max(ids) > _MAX_ID):
        return f"instrument ids beyond 0..{_MAX_ID}"
    return ""


class FastReplay(LaggingSync):
    """Runs a columnar source through ``rt`` (an ``InlineRuntime``): the fast rows here, the
    rest through its exact machinery. ``run`` replaces the runtime's loop over its source;
    the runtime drains and finishes as usual afterwards."""

    def __init__(
        self,
        rt: InlineRuntime,
        source: Any,
        max_rows: int | None = None,
        overlay: Any = None,
    ) -> None:
        self.rt = rt
        self.source = source
        self.max_rows = max_rows
        self.overlay = (
            overlay if overlay is not None and getattr(overlay, "enabled", True) else None
        )
        self.fast_rows = 0  # rows taken on the fast path (the rest went through the machinery)
        self.exact_rows = 0
        host = rt.host
        ids = sorted(rt.instruments.ids)
        size = (max(ids) + 1) if ids else 1
        # the host's books and the venue's, by slot (the kernels write into their buffers)
        self.ids = ids
        self.slot_of = np.full(size, -1, np.int64)
        for s, iid in enumerate(ids):
            self.slot_of[iid] = s
        self.host_bufs = tuple(host.books[iid]._buf for iid in ids)
        self.host_buf_of = {iid: host.books[iid]._buf for iid in ids}
        venue = rt.venue
        self.v_ids = sorted(venue._insts)
        self.v_slot_of = np.full(max(size, max(self.v_ids, default=0) + 1), -1, np.int64)
        for s, iid in enumerate(self.v_ids):
            self.v_slot_of[iid] = s
        self.v_bufs = tuple(venue._insts[iid].book._buf for iid in self.v_ids)
        self._build_dispatch()
        self.no_top = np.zeros(len(ids), np.bool_)
        self.lasts = np.zeros((len(ids), 5), np.int64)
        self._risk_clean = False  # nothing but prices changed since the last full risk refresh
        self._px_moved = False  # risk's prices changed since its marks were last computed
        self._pf_moved = True  # a mark or the account changed since the last equity point
        self._flat = False  # risk held no position at its last full refresh
        self._quiet = False  # the flash guard's last scan found no move and nothing halted
        self._pushes: list[int] = []  # the flash guard's samples not yet written
        self._deferred: list[int] = []  # rows of risk refreshes not yet computed (_flush_risk)
        self._deferred_b: RowBatch | None = None  # their batch (flushed before it ends)
        self._defer_ok = False  # ``_deferrable``, as of the current fast stretch
        lim = rt.risk.limits
        self._protective = lim.stop_loss_pct > 0 or lim.take_profit_pct > 0
        g = rt.risk
        self._kernel_exposure = (
            len(g.marks) < 8
            and g.position.dtype == np.int64
            and (len(g.sector_of) == 0 or int(g.sector_of.max()) < len(g.sector_gross))
        )
        self.pmarks = np.zeros(len(ids), np.int64)
        self.host_idx = self.v_idx = self.e_idx = self.p_idx = self.r_idx = self.q_idx = 0
        self.tick_idx = 0
        rk.warm_up(len(self.host_bufs), len(self.v_bufs))

    # --- the strategies' subscriptions as tables -----------------------------------------------
    def _build_dispatch(self) -> None:
        """Per instrument and row kind, the (slot, callback, top only) to call, in configured
        order; and per kind a lookup array: does any strategy take this instrument's rows."""
        host = self.rt.host
        n = len(self.slot_of)
        self.sub_q = np.zeros(n, np.bool_)
        self.sub_t = np.zeros(n, np.bool_)
        self.sub_b = np.zeros(n, np.bool_)
        self.top_sub = np.zeros(len(self.ids), np.bool_)  # by slot (the kernel's index)
        self.on_q: dict[int, list[tuple[Any, Any, Any, bool]]] = {}
        self.on_t: dict[int, list[tuple[Any, Any, Any, bool]]] = {}
        self.on_b: dict[int, list[tuple[Any, Any, Any, bool]]] = {}
        for iid in self.ids:
            slots = host._by_instrument.get(iid, [])
            q = [(s, s.ctx, s.strategy.on_quote, False) for s in slots if "quote" in s.subs]
            t = [(s, s.ctx, s.strategy.on_trade, False) for s in slots if "trade" in s.subs]
            b = [
                (s, s.ctx, s.strategy.on_book, "book" not in s.subs)
                for s in slots
                if "book" in s.subs or "top" in s.subs
            ]
            self.on_q[iid], self.on_t[iid], self.on_b[iid] = q, t, b
            self.sub_q[iid], self.sub_t[iid] = bool(q), bool(t)
            self.sub_b[iid] = any(not top for *_, top in b)
            self.top_sub[self.slot_of[iid]] = any(top for *_, top in b)
        self.any_top = bool(self.top_sub.any())

    # --- running -------------------------------------------------------------------------------
    def run(self) -> None:
        rt = self.rt
        left = self.max_rows
        pre = self.source.preamble()
        # the overlay sees every event, the preamble's too (a snapshot counts as a tick bar's
        # tick and starts the first time bar, as it does on the message path)
        extras = self._pre_extras(pre)
        for k, msg in enumerate(pre):  # e.g. the opening BookSnapshot: the exact path
            if left is not None:
                if left <= 0:
                    return
                left -= 1
            t0 = time.perf_counter_ns()
            self._exact_item(msg)
            self.exact_rows += 1
            for f in extras.get(k, ()):
                self._exact_item(f)
            rt.wall_ns_per_tick.append(time.perf_counter_ns() - t0)
        for rows in self.source.batches():
            if left is not None:
                if left <= 0:
                    break
                rows = rows[:left]
                left -= len(rows)
            if len(rows):
                t0 = time.perf_counter_ns()
                b = RowBatch(rows)
                self._run_batch(b, self._extras(b, rows))
                per = (time.perf_counter_ns() - t0) // len(rows)
                rt.wall_ns_per_tick.extend(itertools.repeat(per, len(rows)))

    def _exact_item(self, msg: object, wall: bool = True) -> None:
        """One source item through the machinery, as ``InlineRuntime.run``'s loop takes it."""
        from engine.backtest import _msg_time

        rt = self.rt
        rt._step(_msg_time(msg), timers=True, poll_interval=rt.poll_interval_ns)
        rt._source_item(msg)
        for tm in rt._timers:
            if tm[0] is None:
                tm[0] = rt.now_ns + tm[1]

    def _pre_extras(self, pre: list[object]) -> dict[int, list[object]]:
        """The overlay's forecasts for the preamble, by the message they follow."""
        on_messages = getattr(self.overlay, "on_messages", None)
        if on_messages is None or not pre:
            return {}
        fcs = on_messages(pre)
        out: dict[int, list[object]] = {}
        for f, a in zip(fcs, self.overlay.after.tolist(), strict=True):
            out.setdefault(a, []).append(f)
        return out

    def _extras(self, b: RowBatch, rows: np.ndarray) -> dict[int, list[object]]:
        """The overlay's forecasts for this batch, by the row they follow."""
        if self.overlay is None:
            return {}
        fcs = self.overlay.on_rows(rows)
        after = getattr(self.overlay, "after", None)
        if after is None or len(after) != len(fcs):
            after = np.searchsorted(b.ts, [f.ts_recv for f in fcs], "right") - 1
        out: dict[int, list[object]] = {}
        for f, a in zip(fcs, np.asarray(after).tolist(), strict=True):
            out.setdefault(int(a), []).append(f)
        return out

    # --- one batch ------------------------------------------------------------------------------
    def _begin_batch(self, b: RowBatch) -> None:
        """Every component has taken the rows before this batch; which rows a strategy takes."""
        self.host_idx = self.v_idx = self.e_idx = self.p_idx = self.r_idx = self.q_idx = 0
        self.tick_idx = 0
        assert not self._deferred
        self._deferred_b = b
        kind, iid = b.kind, b.instrument_id.astype(np.int64)
        known = (iid >= 0) & (iid < len(self.slot_of))
        iid = np.where(known, iid, 0)
        disp = known & (
            ((kind == _Q) & self.sub_q[iid])
            | ((kind == _T) & self.sub_t[iid])
            | ((kind == _D) & self.sub_b[iid])
        )
        b.disp = np.flatnonzero(disp).tolist()
        # quotes no strategy takes still become the host's last quote (ctx.quote, best_bid)
        b.lazy_quotes = bool(np.any(known & (kind == _Q) & ~disp))
        b.dcum = np.concatenate(([0], np.cumsum(kind == _D))).tolist()
        # quotes and trades (what moves marks and risk's prices) up to each row
        b.qtcum = np.concatenate(([0], np.cumsum(kind != _D))).tolist()

    def _run_batch(self, b: RowBatch, extras: dict[int, list[object]]) -> None:
        rt = self.rt
        self._begin_batch(b)
        n = b.n
        i = 0
        if rt._queue:  # the last row before this batch reaches the strategies
            rt._step(b.ts_l[0], timers=True, poll_interval=rt.poll_interval_ns)
        fast = self._idle()
        while i < n:
            if fast:
                i, fast = self._fast(b, i, extras)
                continue
            self._exact_item(b.message(i))
            self.exact_rows += 1
            for f in extras.get(i, ()):
                self._exact_item(f)
            i += 1
            self._synced(b, i)
            if i < n:  # what is due before the next row: then is the runtime idle again?
                rt._step(b.ts_l[i], timers=True, poll_interval=rt.poll_interval_ns)
                fast = self._idle()
        if fast:
            self._sync_all(b, n)

    def _synced(self, b: RowBatch, k: int) -> None:
        """The machinery took rows ``< k`` itself: every component is current there."""
        self.host_idx = self.v_idx = self.e_idx = self.p_idx = self.r_idx = self.q_idx = k
        self.tick_idx = k
        self._risk_clean = False
        self._pf_moved = True

    def _idle(self) -> bool:
        """Nothing of ours is working: no message queued, no order open or held, no venue
        request, event or expiry pending, no retry, no algo parent, no stop."""
        rt = self.rt
        ex = rt.exec
        v = rt.venue
        if rt._queue or rt.first_ns is None or rt.host.stopped or ex.table.open_count:
            return False
        if ex._retry_due or ex._expiries or ex._held:
            return False
        if ex.algo is not None and ex.algo._working:
            return False
        if any(ex.emulator._stops.values()):
            return False
        if v._requests or v._outbox or v._expiries:
            return False
        return not any(inst.resting for inst in v._insts.values())

    def _sched_row(self, b: RowBatch, i: int) -> int:
        """The first row (from ``i``) before which a control or a timer is due."""
        rt = self.rt
        due = [tm[0] for tm in rt._timers if tm[0] is not None]
        if rt._ci < len(rt._controls):
            due.append(rt._controls[rt._ci].ts)
        if not due:
            return b.n
        return bisect_left(b.ts_l, min(due), i)

    def _clock_row(self, b: RowBatch, i: int) -> int:
        """The first row (from ``i``) on which risk refreshes or the equity curve is sampled."""
        rt = self.rt
        if rt._next_sample is None:
            return i
        return bisect_left(b.ts_l, min(self.rt.risk_stage._refresh_at, rt._next_sample), i)

    # long because: the fast loop itself; its steps are kept inline (each is per row)
    def _fast(self, b: RowBatch, i: int, extras: dict[int, list[object]]) -> tuple[int, bool]:
        """Rows from ``i`` while the runtime stays idle. Returns the next row and whether the
        runtime is still idle (False: the machinery takes the next row)."""
        rt = self.rt
        n = b.n
        disp = b.disp
        ts_l = b.ts_l
        p = bisect_left(disp, i)
        nd = len(disp)
        c_row = self._clock_row(b, i)
        s_row = self._sched_row(b, i)
        e_rows = sorted(a for a in extras if a >= i)
        e = 0
        self._defer_ok = self._deferrable()  # limits change only in the machinery
        while True:
            # the common run: rows a strategy takes, no delta to absorb before them, no clock
            lim = min(s_row, e_rows[e] if e < len(e_rows) else n)
            if not self.any_top:
                p, c_row = self._run(b, p, lim, c_row)
                if rt._queue:  # the row before p sent something: the machinery takes over
                    self._sync_all(b, disp[p - 1] + 1)
                    return disp[p - 1] + 1, False
            d = disp[p] if p < nd else n
            e_row = e_rows[e] if e < len(e_rows) else n
            target = min(d, c_row, e_row)
            if s_row <= target:  # a control or timer is due before row s_row
                r, top = self._absorb(b, s_row)
                if not top:
                    self._sync_all(b, s_row)
                    return s_row, False
            elif target >= n:
                r, top = self._absorb(b, n)
                if not top:
                    return n, True
            else:
                r, top = self._absorb(b, target + 1)
                if not top:
                    r = target
            # row r: the strategies that take it, then risk's prices, then the equity curve
            t = ts_l[r]
            rt.now_ns = t
            if r == d or top:
                self._dispatch(b, r, top)
            if r == c_row:
                self._clock(b, r, t)
                c_row = self._clock_row(b, r + 1)
            while p < nd and disp[p] <= r:
                p += 1
            post = extras.get(r) if r == e_row else None
            if r == e_row:
                e += 1
            if rt._queue or post:
                self._sync_all(b, r + 1)
                for f in post or ():
                    self._exact_item(f)
                return r + 1, False

    # long because: the innermost loop of the fast path, inlined on purpose (a call per row
    # would cost as much as the row)
    def _run(self, b: RowBatch, p: int, lim: int, c_row: int) -> tuple[int, int]:
        """The rows ``disp[p:]`` before ``lim`` a strategy takes, while no delta lies between
        them (the host's books are current), no clock row that is none of them comes first
        and nothing is sent; returns the next ``p`` and the next clock row."""
        rt = self.rt
        disp, ts_l, kind_l, iid_l = b.disp, b.ts_l, b.kind_l, b.iid_l
        bpx_l, bqty_l, apx_l, aqty_l, seq_l = b.bpx_l, b.bqty_l, b.apx_l, b.aqty_l, b.seq_l
        dcum = b.dcum
        deltas = dcum[-1] > 0
        if deltas:
            side_l, px_l, qty_l = b.side_l, b.px_l, b.qty_l
        lazy = b.lazy_quotes
        quotes = rt.host.quotes
        on_q, on_b = self.on_q, self.on_b
        bufs = self.host_buf_of
        qtcum = b.qtcum
        quiet = not self._protective
        rs = rt.risk_stage
        defer = self._defer_ok
        deferred = self._deferred
        nd = len(disp)
        stop = lim if lim <= c_row else c_row + 1
        hi = self.host_idx
        while p < nd:
            r = disp[p]
            if r >= stop:
                break
            k = kind_l[r]
            if r != hi and deltas and dcum[r + 1] - dcum[hi] != (k == _D):
                break  # other deltas to take first (none when r is the host's next row)
            hi = self.host_idx = r + 1
            t = ts_l[r]
            rt.now_ns = t
            p += 1
            iid = iid_l[r]
            if k == _D:  # the host's book takes it (as StrategyHost.absorb), then on_book
                buf = bufs.get(iid)
                if buf is not None:
                    _apply_delta_nb(buf, side_l[r], px_l[r], qty_l[r], seq_l[r])
                subs, arg = on_b[iid], iid
            elif k != _Q or lazy:
                self._dispatch(b, r, False)
                if r == c_row:
                    self._clock(b, r, t)
                    c_row = self._clock_row(b, r + 1)
                    stop = lim if lim <= c_row else c_row + 1
                if rt._queue:
                    break
                continue
            else:
                arg = Quote(iid, bpx_l[r], bqty_l[r], apx_l[r], aqty_l[r], t, t, seq_l[r])
                quotes[iid] = arg
                subs = on_q[iid]
            out = None
            for slot, ctx, fn, _ in subs:
                if not slot.enabled:
                    continue
                ctx.now_ns = t
                ctx.ts_origin = t
                try:
                    fn(arg)
                except Exception as exc:
                    got = self._failed(slot, fn.__name__, exc)
                else:
                    if not ctx._outbox:
                        continue
                    got = ctx.take_intents()
                out = got if out is None else out + got
            if out:
                rt.strategy_stage._send(out)
            if r == c_row:  # risk's refresh and the equity point come after the strategies
                ns = rt._next_sample
                if defer and self._risk_clean and ns is not None and rs._refresh_at <= t < ns:
                    rs._refresh_at = t + rs.refresh_ns  # ``_clock``'s deferral, inline
                    deferred.append(r)
                elif (
                    quiet
                    and qtcum[r + 1] == qtcum[min(self.r_idx, self.p_idx)]
                    and self._quiet_clock(r, t)
                ):
                    pass  # nothing priced since the last quiet refresh: only the guard sample
                else:
                    self._clock(b, r, t)
                ns = rt._next_sample  # the next clock row (``_clock_row``, inline)
                c_row = (
                    bisect_left(ts_l, ns if ns < rs._refresh_at else rs._refresh_at, r + 1)
                    if ns is not None
                    else self._clock_row(b, r + 1)
                )
                stop = lim if lim <= c_row else c_row + 1
            if rt._queue:
                break
        return p, c_row

    # --- per row --------------------------------------------------------------------------------
    def _absorb(self, b: RowBatch, lim: int) -> tuple[int, bool]:
        """The host's books take the deltas up to row ``lim`` (exclusive). With "top"
        subscribers it stops after a row that moved a watched top: ``(that row, True)``;
        else ``(lim, False)``."""
        i0 = self.host_idx
        if i0 >= lim:
            return lim, False
        if self.any_top:
            r = rk.host_absorb(
                b.kind, b.instrument_id, b.side, b.px, b.qty, b.seq, i0, lim,
                self.slot_of, self.host_bufs, self.top_sub,
            )  # fmt: skip
            if r < lim:
                self.host_idx = r + 1
                return r, True
        elif b.dcum[lim] != b.dcum[i0]:
            if lim - i0 == 1:  # one delta (a book subscriber takes every one): no kernel call
                book = self.rt.host.books.get(b.iid_l[i0])
                if book is not None:
                    book.apply_delta(b.side_l[i0], b.px_l[i0], b.qty_l[i0], b.seq_l[i0])
            else:
                rk.host_absorb(
                    b.kind, b.instrument_id, b.side, b.px, b.qty, b.seq, i0, lim,
                    self.slot_of, self.host_bufs, self.no_top,
                )  # fmt: skip
        self.host_idx = lim
        return lim, False

    def _dispatch(self, b: RowBatch, r: int, top: bool) -> None:
        """Row ``r`` to the strategies that take it, as ``StrategyHost.dispatch`` calls them."""
        rt = self.rt
        k = b.kind_l[r]
        iid = b.iid_l[r]
        t = b.ts_l[r]
        if b.lazy_quotes:
            self._sync_host_quotes(b, r + 1)
        if k == _Q:
            if b.lazy_quotes:
                arg: Any = rt.host.quotes[iid]
            else:
                arg = b.quote(r)
                rt.host.quotes[iid] = arg
            subs = self.on_q[iid]
        elif k == _T:
            arg, subs = b.trade(r), self.on_t[iid]
        else:
            arg, subs = iid, self.on_b[iid]
        out: list[Any] | None = None
        for slot, ctx, fn, top_only in subs:
            if not slot.enabled or (top_only and not top):
                continue
            ctx.now_ns = t
            ctx.ts_origin = t
            try:
                fn(arg)
            except Exception as exc:
                got = self._failed(slot, fn.__name__, exc)
            else:
                if not ctx._outbox:
                    continue
                got = ctx.take_intents()
            out = got if out is None else out + got
        if out:
            rt.strategy_stage._send(out)

    def _failed(self, slot: Any, fn: str, exc: Exception) -> list[Any]:
        """A strategy raised: as ``StrategyHost._call`` (re-raise, or disable and cancel)."""
        host = self.rt.host
        if host.on_error == "raise":
            raise exc
        return host._disable(slot, fn, exc)

    def _quiet_clock(self, r: int, t: int) -> bool:
        """``_clock`` at a row with no price since risk's and the portfolio's last sync (the
        caller checked), when risk's last refresh was quiet and nothing moved the marks since
        the last equity point: a deferred guard sample and the last equity point again, as
        ``_refresh`` and ``_clock`` would do. False (nothing done): take ``_clock``."""
        rt = self.rt
        ns = rt._next_sample
        if ns is None or not (self._risk_clean and self._quiet) or self._deferred:
            return False
        if self._px_moved or self._pf_moved:
            return False
        rs = rt.risk_stage
        if t >= rs._refresh_at:
            rs._refresh_at = t + rs.refresh_ns
            self._pushes.append(t)
        self.r_idx = self.p_idx = r + 1
        if t >= ns:
            rt.portfolio.sample_same(t)
            rt._next_sample = t + rt.equity_interval_ns
        return True

    def _clock(self, b: RowBatch, r: int, t: int) -> None:
        """Risk's refresh and the equity sample, when due at row ``r`` (``RiskStage.on_price``,
        ``InlineRuntime._handle``)."""
        rt = self.rt
        rs = rt.risk_stage
        if t >= rs._refresh_at:
            if self._risk_clean and self._defer_ok:
                rs._refresh_at = t + rs.refresh_ns
                self._deferred.append(r)  # computed when something reads risk (_flush_risk)
            else:
                self._flush_risk()
                self._sync_risk(b, r + 1)
                rs._refresh_at = t + rs.refresh_ns
                self._refresh(t)
        if rt._next_sample is None or t >= rt._next_sample:
            self._sync_portfolio(b, r + 1)
            if self._pf_moved:
                rt.portfolio.sample(t)
                self._pf_moved = False
            else:  # nothing moved since the last point (``_pf_moved``)
                rt.portfolio.sample_same(t)
            rt._next_sample = t + rt.equity_interval_ns

    def _refresh(self, t: int) -> None:
        """``RiskStage.refresh``; while nothing but prices changed since the last full one and
        those prices move no exposure (flat, or unchanged), only what can differ: the marks and
        the flash-move guard (exposure, equity, sector totals, VaR and breakers would come out
        the same)."""
        rt = self.rt
        g = rt.risk
        lim = g.limits
        protective = lim.stop_loss_pct > 0 or lim.take_profit_pct > 0
        gd = g.guard
        if self._risk_clean and not protective and (not self._px_moved or self._flat):
            if not self._px_moved and self._quiet:  # the last scan found nothing at these prices
                self._pushes.append(t)  # nor can this one: only its sample, written later
                return
            self._push_samples()
            if rk.flat_refresh(
                g.bid, g.ask, g.last, g.marks, t, gd._px, gd._ts, gd._head, gd.window_ns,
                gd.on, gd.bands, gd._moved, gd._ref, gd.flash_halted, gd._mode, gd._ladders,
                gd.band,
            ):  # fmt: skip
                out = gd.decide(g.marks, t)
                self._quiet = False
                if out:
                    rt.risk_stage.route(out)
            else:
                self._quiet = True
            self._px_moved = False
            return
        self._push_samples()
        if self._kernel_exposure:
            self._full_refresh(t)
        else:
            rt.risk_stage.refresh(t)
        self._risk_clean = True
        self._px_moved = False
        cnz = np.count_nonzero  # what ``.any()`` says, without its Python-level reduction
        self._flat = not cnz(g.position)
        self._quiet = not (cnz(gd._moved) or cnz(gd.flash_halted))

    def _deferrable(self) -> bool:
        """A refresh while nothing but prices changed since the last full one can wait when
        all it leaves behind is the marks, exposures, equity and its peak: no protective
        order, no flash guard (band 0), no loss or drawdown breaker, the kernel's exposure."""
        g = self.rt.risk
        lim = g.limits
        return (
            self._kernel_exposure
            and not self._protective
            and not g.guard.on
            and lim.daily_loss_halt_pct <= 0
            and lim.daily_loss_reduce_pct <= 0
            and lim.drawdown_halt_pct <= 0
            and lim.drawdown_reduce_pct <= 0
        )

    def _flush_risk(self) -> None:
        """The deferred refreshes (``_clock``), before anything reads risk: every one but the
        last only for the equity's running peak (one kernel), the last as ``_refresh``."""
        if not self._deferred:
            return
        rows = self._deferred.copy()
        self._deferred.clear()
        b = self._deferred_b
        assert b is not None
        g = self.rt.risk
        if len(rows) > 1 and g.position.any():  # flat: the equity stays the last one
            g.marks = g.marks.copy()
            g.peak_equity = float(
                rk.deferred_peak(
                    b.kind, b.instrument_id, b.bid_px, b.bid_qty, b.ask_px, b.ask_qty, b.px,
                    self.r_idx, np.array(rows[:-1], np.int64), g.bid, g.ask, g.last, g.marks,
                    g.position, g.mult, g.limits.capital + g.cash, g.peak_equity,
                )
            )  # fmt: skip
            self.r_idx = rows[-2] + 1
            self._px_moved = True
        r = rows[-1]
        self._sync_risk(b, r + 1)
        self._refresh(b.ts_l[r])

    def _full_refresh(self, t: int) -> None:
        """``RiskGate.on_prices`` (``risk_controls.on_prices``) with ``refresh_exposure``'s
        arithmetic in one kernel (the same operations in the same order: the caller made sure
        there are fewer than 8 instruments, where numpy sums in order too)."""
        from engine.enums import TradingState
        from engine.risk_controls import breakers, protective

        g = self.rt.risk
        exp = np.empty(len(g.marks))
        gross = np.zeros(len(g.sector_gross))
        g.marks = g.marks.copy()
        g.equity = float(
            rk.exposure(
                g.bid, g.ask, g.last, g.marks, g.position, g.mult, g.sector_of, exp, gross,
                g.limits.capital + g.cash,
            )
        )  # fmt: skip
        g.exposure, g.sector_gross = exp, gross
        g.stats.set_exposure(exp)
        out = g.guard.on_prices(g.marks, t)
        out += breakers(g, t, 0)
        if self._protective and not (g.trading.state == TradingState.HALTED or g.stopping):
            out += protective(g, t)
        if out:
            self.rt.risk_stage.route(out)

    def _push_samples(self) -> None:
        """The flash guard's deferred samples (``_refresh``), before anything reads it."""
        if self._pushes:
            g = self.rt.risk
            gd = g.guard
            if gd.on:
                times = np.array(self._pushes, np.int64)
                rk.guard_pushes(g.marks, times, gd._px, gd._ts, gd._head)
            self._pushes = []

    # --- bringing the lagging components up to a row ---------------------------------------------
    def _sync_all(self, b: RowBatch, k: int) -> None:
        """Every component as the exact path leaves it after rows ``< k`` (the host's books
        already are: ``_absorb``)."""
        rt = self.rt
        self._flush_risk()
        if b.lazy_quotes:
            self._sync_host_quotes(b, k)
        self._sync_venue(b, k)
        self._sync_exec(b, k)
        self._sync_portfolio(b, k)
        self._sync_risk(b, k)
        self._push_samples()
        t = b.ts_l[k - 1]
        rt.now_ns = max(rt.now_ns, t)
        rt._polled_at = max(rt._polled_at, t)
        rt.ticks += k - self.tick_idx
        self.fast_rows += k - self.tick_idx
        self.tick_idx = k
        self._risk_clean = False
        self._pf_moved = True
