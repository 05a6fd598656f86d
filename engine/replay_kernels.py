"""Numba kernels of the fast replay (``engine.replay_fast``): market-data rows applied to books.

Why: the exact runtime builds one message per event and hands it to the simulated venue, the
strategy host's book, exec, risk and the portfolio in Python. While nothing of ours is working at
the venue, most of that is bookkeeping that only the latest row decides, or book updates. These
kernels do that work over ``engine.md_columns.MD_DTYPE`` row ranges, on the very buffers of the
``engine.book.L2Book`` objects (through ``_apply_delta_nb``), so the Python objects are exactly
what the message path would have left:

- ``venue_apply``: ``SimExchange``'s handling of quotes, deltas and trades for an instrument with
  no resting order of ours (``engine.venues.sim_flow``): the level semantics of a quote, the
  ``pending_trades`` a batch of prints leaves, the ``consumed`` levels a market update forgets;
- ``host_absorb``: the strategy host's books (deltas), stopping at the first row whose top of book
  changed for an instrument a strategy watches that way (the ``"top"`` subscription);
- ``scan_lasts``: the last row of each kind per instrument in a range (marks and prices).

Columns come in as separate contiguous arrays (one per field) and instrument ids map to a slot
(``slot_of``; -1: not ours).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.book import _apply_delta_nb, _qty_at_nb
from engine.market_guard import _scan_and_push

_QUOTE, _TRADE, _DELTA = 1, 2, 3
_REJECTED = 16
_TOP_CHANGED = 128
_S_NBID, _S_NASK, _S_LAST_SEQ, _S_CAP, _HDR = 0, 1, 2, 9, 16


@njit(cache=True, nogil=True)
def _qty(buf, side, px):  # pragma: no cover - compiled
    if px <= 0:
        return 0
    if side == 1:
        return _qty_at_nb(buf, 0, -px)
    return _qty_at_nb(buf, 1, px)


@njit(cache=True, nogil=True)
def _level_changed(s, side, px, old, new, pend, npend, cons, ncons):  # pragma: no cover
    """``MarketFlow._level_changed`` without resting orders: the level's consumed size is
    forgotten, a decrease is first explained by the prints of the current batch."""
    for k in range(ncons[s]):
        if cons[s, k, 0] == side and cons[s, k, 1] == px:
            cons[s, k, 2] = 0  # popped (Python drops the entry)
    if new < old:
        dec = old - new
        for k in range(npend[s]):
            if pend[s, k, 0] == side and pend[s, k, 1] == px and pend[s, k, 2] > 0:
                pend[s, k, 2] -= min(dec, pend[s, k, 2])
                break


@njit(cache=True, nogil=True)
def _venue_quote(buf, s, bpx, bqty, apx, aqty, seq, pend, npend, cons, ncons):  # pragma: no cover
    """``MarketFlow._on_quote``: levels better than the quote go, the quoted ones are set.
    Returns 1 when the venue ignores the quote (counted), else 0."""
    if seq > 0 and seq == buf[_S_LAST_SEQ]:
        return 0
    if bpx < 0 or bqty < 0 or apx < 0 or aqty < 0:
        return 1
    cap = buf[_S_CAP]
    for side in (1, -1):
        px = bpx if side == 1 else apx
        qty = bqty if side == 1 else aqty
        empty = px == 0 or qty == 0
        si = 0 if side == 1 else 1
        while buf[si] > 0:
            key = buf[_HDR + si * cap]
            lpx = -key if side == 1 else key
            lqty = buf[_HDR + (2 + si) * cap]
            if not empty and (lpx <= px if side == 1 else lpx >= px):
                break
            _apply_delta_nb(buf, side, lpx, 0, 0)
            _level_changed(s, side, lpx, lqty, 0, pend, npend, cons, ncons)
        if not empty:
            old = _qty(buf, side, px)
            _apply_delta_nb(buf, side, px, qty, 0)
            _level_changed(s, side, px, old, qty, pend, npend, cons, ncons)
    return 0


@njit(cache=True, nogil=True)
def _venue_trade(s, side, px, qty, flags, pend, npend):  # pragma: no cover - compiled
    """``MarketFlow._on_trade`` without resting orders: the batch's prints per level.
    ``flags[s]``: bit 0 last_was_trade, bit 1 seen_trade, bit 2 halted. Returns 1 when the
    print is ignored (counted), 2 when the pending table could overflow (nothing changed:
    Python hands the row to the venue itself)."""
    if px <= 0 or qty <= 0:
        return 1
    if flags[s] & 4:
        return 0
    n = npend[s] if flags[s] & 1 else 0  # a new batch of prints: older ones were settled
    if n + 2 > pend.shape[1]:
        return 2
    npend[s] = n
    for rs in (1, -1):  # the resting side(s): opposite to the aggressor, both when unknown
        if rs == side:
            continue
        found = False
        for k in range(npend[s]):
            if pend[s, k, 0] == rs and pend[s, k, 1] == px:
                pend[s, k, 2] += qty
                found = True
                break
        if not found:
            n = npend[s]
            pend[s, n, 0] = rs
            pend[s, n, 1] = px
            pend[s, n, 2] = qty
            npend[s] = n + 1
    flags[s] |= 3
    return 0


# long because: one loop over the rows with the three kinds inline (a call per kind per row
# would cost more than the work)
@njit(cache=True, nogil=True)
def venue_apply(
    kind, iid, side, px, qty, bpx, bqty, apx, aqty, seq, i0, i1,
    slot_of, bufs, flags, pend, npend, cons, ncons, ignored,
):  # pragma: no cover - compiled  # fmt: skip
    """Apply rows ``[i0, i1)`` to the venue's books; returns ``i1``, or the index of a row it
    cannot take (Python hands that row to the venue itself). ``ignored[0]`` counts what the
    venue would have ignored."""
    for i in range(i0, i1):
        ins = iid[i]
        s = slot_of[ins] if 0 <= ins < slot_of.shape[0] else -1
        if s < 0:
            ignored[0] += 1
            continue
        buf = bufs[s]
        k = kind[i]
        if k == _QUOTE:
            flags[s] &= ~1
            ignored[0] += _venue_quote(
                buf, s, bpx[i], bqty[i], apx[i], aqty[i], seq[i], pend, npend, cons, ncons
            )
        elif k == _DELTA:
            flags[s] &= ~1
            sd = side[i]
            if sd != 1 and sd != -1:
                ignored[0] += 1
                continue
            old = _qty(buf, sd, px[i])
            if _apply_delta_nb(buf, sd, px[i], qty[i], seq[i]) & _REJECTED:
                ignored[0] += 1
                continue
            if npend[s] > 0 or ncons[s] > 0:
                _level_changed(s, sd, px[i], old, _qty(buf, sd, px[i]), pend, npend, cons, ncons)
        elif k == _TRADE:
            r = _venue_trade(s, side[i], px[i], qty[i], flags, pend, npend)
            if r == 2:
                return i
            ignored[0] += r
        else:
            ignored[0] += 1
    return i1


@njit(cache=True, nogil=True)
def host_absorb(kind, iid, side, px, qty, seq, i0, i1, slot_of, bufs, top_sub):  # pragma: no cover
    """The strategy host's books: apply the deltas of rows ``[i0, i1)``; stop after the first
    row whose top of book changed on an instrument with a ``"top"`` subscriber and return its
    index, else ``i1``."""
    for i in range(i0, i1):
        if kind[i] != _DELTA:
            continue
        ins = iid[i]
        s = slot_of[ins] if 0 <= ins < slot_of.shape[0] else -1
        if s < 0:
            continue
        f = _apply_delta_nb(bufs[s], side[i], px[i], qty[i], seq[i])
        if top_sub[s] and f & _TOP_CHANGED and not f & _REJECTED:
            return i
    return i1


@njit(cache=True, nogil=True)
def scan_lasts(kind, iid, bpx, bqty, apx, aqty, px, i0, i1, slot_of, out):  # pragma: no cover
    """Per slot, the last row in ``[i0, i1)`` of: a quote (``out[s, 0]``: the host's and exec's
    last quote), a quote with a usable bid (1) / ask (2) (risk's prices), a trade with a price
    (3: risk's and the stop emulator's last), a row that marks the portfolio (4: a two-sided
    quote with a positive mid, or a trade with a price); -1 where none."""
    out[:, :] = -1
    for i in range(i0, i1):
        ins = iid[i]
        s = slot_of[ins] if 0 <= ins < slot_of.shape[0] else -1
        if s < 0:
            continue
        k = kind[i]
        if k == _QUOTE:
            out[s, 0] = i
            if bqty[i] > 0 and bpx[i] > 0:
                out[s, 1] = i
            if aqty[i] > 0 and apx[i] > 0:
                out[s, 2] = i
            if bqty[i] > 0 and aqty[i] > 0 and (bpx[i] + apx[i]) // 2 > 0:
                out[s, 4] = i
        elif k == _TRADE and px[i] > 0:
            out[s, 3] = i
            out[s, 4] = i


@njit(cache=True, nogil=True)
def risk_prices(kind, iid, bpx, bqty, apx, aqty, px, i0, i1, bid, ask, last):  # pragma: no cover
    """``RiskBook.on_market_data`` over rows ``[i0, i1)``: the last usable bid, ask and trade
    price per instrument id into ``bid`` / ``ask`` / ``last``. Returns whether any changed."""
    n = bid.shape[0]
    changed = False
    for i in range(i0, i1):
        ins = iid[i]
        if ins < 0 or ins >= n:
            continue
        k = kind[i]
        if k == _QUOTE:
            if bqty[i] > 0 and bpx[i] > 0 and bid[ins] != bpx[i]:
                bid[ins] = bpx[i]
                changed = True
            if aqty[i] > 0 and apx[i] > 0 and ask[ins] != apx[i]:
                ask[ins] = apx[i]
                changed = True
        elif k == _TRADE and px[i] > 0 and last[ins] != px[i]:
            last[ins] = px[i]
            changed = True
    return changed


@njit(cache=True, nogil=True)
def marks(kind, iid, bpx, bqty, apx, aqty, px, i0, i1, slot_of, out):  # pragma: no cover
    """``Portfolio.on_market_data``'s marks over rows ``[i0, i1)``: per slot the last one (a
    two-sided quote's mid rounded down, a trade's price; only > 0), 0 where none. Returns how
    many slots got one."""
    out[:] = 0
    for i in range(i0, i1):
        ins = iid[i]
        s = slot_of[ins] if 0 <= ins < slot_of.shape[0] else -1
        if s < 0:
            continue
        k = kind[i]
        if k == _QUOTE:
            if bqty[i] > 0 and aqty[i] > 0:
                m = (bpx[i] + apx[i]) // 2
                if m > 0:
                    out[s] = m
        elif k == _TRADE and px[i] > 0:
            out[s] = px[i]
    got = 0
    for s in range(out.shape[0]):
        if out[s] > 0:
            got += 1
    return got


@njit(cache=True, nogil=True)
def flat_refresh(
    bid, ask, last, marks, now, hist_px, hist_ts, head, window_ns, on, bands, moved, ref, halted,
    mode, ladders, rel,
):  # pragma: no cover - compiled  # fmt: skip
    """What ``RiskBook.refresh_exposure`` + ``MarketGuard.on_prices`` change when only prices
    moved and no position is open: the marks (``mids`` where known, in place) and the guard's
    sample. Returns whether the guard has a halt to start or end (``MarketGuard.decide``)."""
    for i in range(bid.shape[0]):
        if bid[i] > 0 and ask[i] > 0:
            m = (bid[i] + ask[i]) / 2.0
        else:
            m = float(last[i])
        if m > 0:
            marks[i] = m
    if not on:
        return False
    if _scan_and_push(
        marks, now, hist_px, hist_ts, head, window_ns, bands, moved, ref, mode, ladders, rel
    ):
        return True
    return halted.any()


@njit(cache=True, nogil=True)
def exposure(
    bid, ask, last, marks, position, mult, sector_of, exp, gross, base
):  # pragma: no cover
    """``RiskBook.refresh_exposure`` in one pass: marks (in place), exposures into ``exp``,
    sector gross into ``gross`` (zeroed by the caller); returns the equity, ``base`` (capital +
    cash) plus the exposures summed in order — numpy's sum of fewer than 8 values, the only
    case the caller uses this for."""
    total = 0.0
    for i in range(bid.shape[0]):
        if bid[i] > 0 and ask[i] > 0:
            m = (bid[i] + ask[i]) / 2.0
        else:
            m = float(last[i])
        if m > 0:
            marks[i] = m
        e = position[i] * marks[i] * mult[i]
        exp[i] = e
        total += e
        gross[sector_of[i]] += abs(e)
    return base + total


@njit(cache=True, nogil=True)
def deferred_peak(
    kind, iid, bpx, bqty, apx, aqty, px, i0, rows, bid, ask, last, marks, position, mult, base, peak
):  # pragma: no cover - compiled
    """Risk's refreshes at ``rows`` (ascending, from ``i0``) when only the prices moved and
    nothing but the equity's peak outlives them (no breaker, guard or protective order): per
    row, ``risk_prices`` up to it, then the marks and the equity as ``exposure`` computes them
    (the same operations in the same order); returns the peak (``breakers``' running max)."""
    n = bid.shape[0]
    j = i0
    for r in rows:
        for i in range(j, r + 1):
            ins = iid[i]
            if ins < 0 or ins >= n:
                continue
            k = kind[i]
            if k == _QUOTE:
                if bqty[i] > 0 and bpx[i] > 0:
                    bid[ins] = bpx[i]
                if aqty[i] > 0 and apx[i] > 0:
                    ask[ins] = apx[i]
            elif k == _TRADE and px[i] > 0:
                last[ins] = px[i]
        j = r + 1
        total = 0.0
        for s in range(n):
            if bid[s] > 0 and ask[s] > 0:
                m = (bid[s] + ask[s]) / 2.0
            else:
                m = float(last[s])
            if m > 0:
                marks[s] = m
            total += position[s] * marks[s] * mult[s]
        eq = base + total
        if eq > peak:
            peak = eq
    return peak


@njit(cache=True, nogil=True)
def guard_pushes(marks, times, hist_px, hist_ts, head):  # pragma: no cover - compiled
    """The flash guard's samples at ``times`` with unchanged ``marks``: what ``_scan_and_push``
    writes to the history when its scan can find no move (the prices are those of a scan that
    found none, so no sample in the window is farther from them)."""
    k = hist_px.shape[1]
    for t in times:
        for i in range(marks.shape[0]):
            p = marks[i]
            if not p > 0.0:
                continue
            h = head[i]
            hist_px[i, h] = p
            hist_ts[i, h] = t
            head[i] = (h + 1) % k


def warm_up(n_host: int = 1, n_venue: int = 1) -> None:
    """Compile (or load from the cache) the specialisations a run uses before its first batch:
    the books go in as tuples, one specialisation per number of instruments."""
    z = np.zeros(1, np.int64)
    k = np.array([_QUOTE], np.uint8)
    ii = np.zeros(1, np.int32)
    sd = np.zeros(1, np.int8)
    slot = np.zeros(1, np.int64)
    buf = np.zeros(_HDR + 8, np.int64)
    buf[_S_CAP] = 2
    hbufs = (buf,) * max(1, n_host)
    vbufs = (buf,) * max(1, n_venue)
    pend = np.zeros((1, 4, 3), np.int64)
    cons = np.zeros((1, 4, 3), np.int64)
    n1 = np.zeros(1, np.int64)
    venue_apply(k, ii, sd, z, z, z, z, z, z, z, 0, 1, slot, vbufs, n1.copy(), pend, n1.copy(),
                cons, n1.copy(), n1.copy())  # fmt: skip
    host_absorb(k, ii, sd, z, z, z, 0, 1, slot, hbufs, np.zeros(1, np.bool_))
    scan_lasts(k, ii, z, z, z, z, z, 0, 1, slot, np.zeros((1, 5), np.int64))
    risk_prices(k, ii, z, z, z, z, z, 0, 1, z.copy(), z.copy(), z.copy())
    marks(k, ii, z, z, z, z, z, 0, 1, slot, z.copy())
    f = np.zeros(1)
    hp, ht = np.zeros((1, 2)), np.zeros((1, 2), np.int64)
    b1 = np.zeros(1, np.bool_)
    lad = np.ones((1, 2))
    flat_refresh(z, z, z, f, 0, hp, ht, z.copy(), 1, True, f.copy(), b1, f.copy(), b1.copy(),
                 z.copy(), lad, 0.1)  # fmt: skip
    guard_pushes(f, z, hp, ht, z.copy())
    exposure(z, z, z, f, z, f, z, f.copy(), f.copy(), 0.0)
    deferred_peak(k, ii, z, z, z, z, z, 0, z, z.copy(), z.copy(), z.copy(), f, z, f, 0.0, 0.0)
