"""Order-book microstructure features, one event at a time: the one implementation that both
training (a LOBSTER day, a Binance capture) and the infer process run.

Why event by event: the signal in a limit order book (imbalance, order-flow imbalance, queue
depletion, who is trading) lives at event horizons, and a model only means in serving what it
meant in training if every feature row is computed by the same code from the same state. So the
state is a small float64 array and a ring of recent order-flow increments, ``step`` advances it by
one book event and writes one row, and ``features_of_events`` is nothing but that loop over a
day. Nothing allocates per event (numba, ``nogil``).

The row (``FEATURES``, in order) describes the book *after* the event. Order-flow imbalance is
Cont, Kukanov and Stoikov's (2014) increment at the best prices; sizes are normalised by an EWMA
of the touch depth, prices by the tick. A row whose book is one-sided or crossed is not valid.
"""

from __future__ import annotations

import math

import numba
import numpy as np

FEATURES = (
    "imbalance_1",  # (bid size - ask size) / (sum) at the touch
    "imbalance_depth",  # the same over the visible levels, level l weighted 1 / l
    "imbalance_2",  # the second level's (0 when the data has one level)
    "spread_ticks",
    "ofi_1",  # this event's order-flow imbalance / touch depth EWMA
    "ofi_10",  # over the last 10 events
    "ofi_50",  # over the last 50 events
    "trade_sign_ewma",  # aggressor signs of recent trades (+1 buy, -1 sell)
    "trade_flow",  # signed traded size at this event / touch depth EWMA
    "log_ms_since_mid_change",
    "last_mid_move",  # sign of the last change of the mid price
    "bid_queue_left",  # touch bid size / its largest since that price became the best bid
    "ask_queue_left",
    "log_touch_depth",  # log(touch size / its EWMA)
    "microprice_ticks",  # size-weighted mid minus mid, in ticks
    "log_ms_since_trade",
)
N_FEATURES = len(FEATURES)

_W_SHORT, _W_LONG = 10, 50
_DEPTH_ALPHA = 0.01  # the touch depth's EWMA, per event
_SIGN_ALPHA = 0.2  # the trade signs' EWMA, per trade

# state slots
_PB, _QB, _PA, _QA = 0, 1, 2, 3  # the previous touch (order-flow imbalance)
_MID, _T_MID, _LAST_MOVE = 4, 5, 6
_SIGN, _DEPTH = 7, 8
_MAXQB, _MAXQA = 9, 10
_N, _RING_AT = 11, 12
_OFI_S, _OFI_L = 13, 14
_T_TRADE = 15
STATE_SIZE = 16


def new_state() -> tuple[np.ndarray, np.ndarray]:
    """(state, ring) for one instrument's stream."""
    st = np.zeros(STATE_SIZE, np.float64)
    st[_T_MID] = np.nan
    st[_T_TRADE] = np.nan
    return st, np.zeros(_W_LONG, np.float64)


@numba.njit(cache=True, nogil=True)
def step(
    st: np.ndarray,
    ring: np.ndarray,
    ts_ns: int,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
    trade_signed: float,
    tick: float,
    out: np.ndarray,
) -> bool:
    """Advance the state by one event (the book after it, and the aggressor-signed size traded
    at it), write its row into ``out``; False when the book is one-sided or crossed (the row is
    NaN and the state keeps the last good touch)."""
    pb, qb, pa, qa = float(bid_px[0]), float(bid_sz[0]), float(ask_px[0]), float(ask_sz[0])
    if trade_signed != 0.0:
        sign = 1.0 if trade_signed > 0 else -1.0
        st[_SIGN] += _SIGN_ALPHA * (sign - st[_SIGN])
        st[_T_TRADE] = ts_ns
    if qb <= 0.0 or qa <= 0.0 or pa <= pb:
        out[:] = np.nan
        return False
    n = st[_N]
    if n == 0:
        e = 0.0
        st[_DEPTH] = qb + qa
        st[_MAXQB], st[_MAXQA] = qb, qa
    else:
        e = 0.0
        if pb >= st[_PB]:
            e += qb
        if pb <= st[_PB]:
            e -= st[_QB]
        if pa <= st[_PA]:
            e -= qa
        if pa >= st[_PA]:
            e += st[_QA]
        st[_DEPTH] += _DEPTH_ALPHA * (qb + qa - st[_DEPTH])
        st[_MAXQB] = qb if pb != st[_PB] else max(st[_MAXQB], qb)
        st[_MAXQA] = qa if pa != st[_PA] else max(st[_MAXQA], qa)
    # the order-flow ring: running sums over the last 10 and 50 increments
    at = int(st[_RING_AT])
    st[_OFI_L] += e - ring[at]
    short_out = ring[(at - _W_SHORT) % _W_LONG]
    st[_OFI_S] += e - short_out
    ring[at] = e
    st[_RING_AT] = (at + 1) % _W_LONG
    mid = 0.5 * (pb + pa)
    if n == 0:
        st[_T_MID] = ts_ns
    elif mid != st[_MID]:
        st[_LAST_MOVE] = 1.0 if mid > st[_MID] else -1.0
        st[_T_MID] = ts_ns
    st[_MID] = mid
    st[_PB], st[_QB], st[_PA], st[_QA] = pb, qb, pa, qa
    st[_N] = n + 1
    depth = max(st[_DEPTH], 1e-12)
    # the visible levels, weighted 1 / level
    num = 0.0
    den = 0.0
    for lvl in range(bid_sz.shape[0]):
        w = 1.0 / (lvl + 1)
        b = float(bid_sz[lvl]) if bid_sz[lvl] > 0 else 0.0
        a = float(ask_sz[lvl]) if ask_sz[lvl] > 0 else 0.0
        num += w * (b - a)
        den += w * (b + a)
    imb2 = 0.0
    if bid_sz.shape[0] > 1:
        b2 = float(bid_sz[1]) if bid_sz[1] > 0 else 0.0
        a2 = float(ask_sz[1]) if ask_sz[1] > 0 else 0.0
        if b2 + a2 > 0:
            imb2 = (b2 - a2) / (b2 + a2)
    out[0] = (qb - qa) / (qb + qa)
    out[1] = num / den
    out[2] = imb2
    out[3] = (pa - pb) / tick
    out[4] = e / depth
    out[5] = st[_OFI_S] / depth
    out[6] = st[_OFI_L] / depth
    out[7] = st[_SIGN]
    out[8] = trade_signed / depth
    out[9] = math.log1p(max(ts_ns - st[_T_MID], 0.0) / 1e6)
    out[10] = st[_LAST_MOVE]
    out[11] = qb / max(st[_MAXQB], 1e-12)
    out[12] = qa / max(st[_MAXQA], 1e-12)
    out[13] = math.log((qb + qa) / depth)
    out[14] = ((pa * qb + pb * qa) / (qb + qa) - mid) / tick
    t_trade = st[_T_TRADE]
    out[15] = math.log1p(max(ts_ns - t_trade, 0.0) / 1e6) if t_trade == t_trade else 10.0
    return True


@numba.njit(cache=True, nogil=True)
def _all_events(
    st: np.ndarray,
    ring: np.ndarray,
    ts: np.ndarray,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
    trade: np.ndarray,
    tick: float,
    out: np.ndarray,
    valid: np.ndarray,
) -> None:
    for i in range(ts.shape[0]):
        valid[i] = step(
            st, ring, ts[i], bid_px[i], bid_sz[i], ask_px[i], ask_sz[i], trade[i], tick, out[i]
        )


def features_of_events(
    ts: np.ndarray,
    bid_px: np.ndarray,
    bid_sz: np.ndarray,
    ask_px: np.ndarray,
    ask_sz: np.ndarray,
    trade: np.ndarray,
    tick: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(rows float64 [n, N_FEATURES], valid bool [n]) of a stream of book events: ``step`` in
    a loop from a fresh state. Books are [n, levels] (best first; size 0 = no level)."""
    n = len(ts)
    out = np.empty((n, N_FEATURES), np.float64)
    valid = np.zeros(n, np.bool_)
    st, ring = new_state()
    _all_events(
        st,
        ring,
        np.ascontiguousarray(ts, np.int64),
        np.ascontiguousarray(bid_px, np.int64),
        np.ascontiguousarray(bid_sz, np.int64),
        np.ascontiguousarray(ask_px, np.int64),
        np.ascontiguousarray(ask_sz, np.int64),
        np.ascontiguousarray(trade, np.float64),
        float(tick),
        out,
        valid,
    )
    return out, valid
