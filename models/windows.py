"""Per-instrument feature windows for streaming inference: ring buffers that never allocate.

Why: the infer process turns every closed bar into one feature row and, at each bar close, hands
the model the last ``input_size`` rows of every instrument as one batch. Rows are computed by
``models.features.feature_row_into`` — the per-bar twin of the training-time
``compute_features`` — so the model sees at serving time exactly the rows it was trained on
(a test checks they are identical, bit for bit).

Layout: one float32 block ``[n_slots, 2 * capacity, n_features]``. Each row is written twice,
at ``pos`` and ``pos + capacity``, so the last ``capacity`` rows of a slot are always one
contiguous slice ``[pos, pos + capacity)`` in time order: reading a window is a view, and
gathering a batch is one ``np.take`` into a preallocated array with a preallocated index. The
storage never grows or moves; the only per-bar allocations are the few small temporaries of the
one ``compute_features`` call ``push_all`` makes per bar close (not per tick).

``push_bars`` is the batch form for backtests: many closes at once, every feature row still from
one ``compute_features`` call (so rows are bit-identical to ``push_all``'s), and ``Pushed`` gives
the window each slot had after each of those closes.
"""

from __future__ import annotations

import numpy as np

from models.features import N_FEATURES, compute_features, feature_row_into


class FeatureWindows:
    """The last ``capacity`` feature rows of each of ``n_slots`` instruments."""

    def __init__(self, n_slots: int, capacity: int, n_features: int = N_FEATURES) -> None:
        if n_slots <= 0 or capacity <= 0:
            raise ValueError("FeatureWindows needs n_slots > 0 and capacity > 0")
        self.n_slots = n_slots
        self.n_features = n_features
        self.capacity = capacity
        self._buf = np.zeros((n_slots, 2 * capacity, n_features), dtype=np.float32)
        self._pos = np.zeros(n_slots, dtype=np.int64)
        #: bars pushed per slot (since start or the last reset)
        self.count = np.zeros(n_slots, dtype=np.int64)
        self._prev_close = np.full(n_slots, np.nan, dtype=np.float64)
        #: feature values replaced because a bar was invalid (see models.features)
        self.replaced = 0
        # the batch the model reads: ready windows are copied here, rows 0..k-1
        self.batch = np.zeros((n_slots, capacity, n_features), dtype=np.float32)
        self._alloc_index()

    def _alloc_index(self) -> None:
        self._ar = np.arange(self.capacity, dtype=np.int64)
        self._idx = np.empty((self.n_slots, self.capacity), dtype=np.int64)
        # push_all's interleaved (previous close, this bar) series, see there
        n2 = 2 * self.n_slots
        self._c2 = np.full(n2, np.nan)
        self._h2 = np.ones(n2)
        self._l2 = np.ones(n2)
        self._v2 = np.zeros(n2)
        self._t2 = np.zeros(n2, dtype=np.int64)

    def push_bar(
        self, slot: int, high: float, low: float, close: float, volume: float, ts_ns: int
    ) -> None:
        """Append one closed bar's feature row to a slot's window."""
        p = int(self._pos[slot])
        row = self._buf[slot, p]
        self.replaced += feature_row_into(
            row, self._prev_close[slot], high, low, close, volume, ts_ns
        )
        self._buf[slot, p + self.capacity] = row
        self._pos[slot] = p + 1 if p + 1 < self.capacity else 0
        self.count[slot] += 1
        self._prev_close[slot] = close

    def push_all(
        self,
        valid: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        ts_ns: int,
    ) -> np.ndarray:
        """Append one bar to every slot where ``valid`` (arrays indexed by slot), vectorised;
        returns the new rows ``[n_slots, F]`` (rows of invalid slots are meaningless).

        All instruments' bars close at once in the infer process, so their rows are computed in
        one call of ``compute_features`` itself (not a copy of its rules) on an interleaved
        series ``prev_close_0, bar_0, prev_close_1, bar_1, ...``: each odd row's return is
        log(close / previous close) under the training-time rules; even rows are discarded.
        """
        n = self.n_slots
        c2, h2, l2, v2, t2 = self._c2, self._h2, self._l2, self._v2, self._t2
        c2[0::2] = self._prev_close
        c2[1::2] = close
        h2[1::2] = high
        l2[1::2] = low
        v2[1::2] = volume
        t2[1::2] = ts_ns
        rows = compute_features(c2, h2, l2, c2, v2, t2)[1::2]
        slots = np.flatnonzero(valid[:n])
        pos = self._pos[slots]
        r = rows[slots]
        self._buf[slots, pos] = r
        self._buf[slots, pos + self.capacity] = r
        self._pos[slots] = np.where(pos + 1 < self.capacity, pos + 1, 0)
        self.count[slots] += 1
        self._prev_close[slots] = close[slots]
        return rows

    def push_bars(
        self,
        valid: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
        ts_ns: np.ndarray,
    ) -> Pushed:
        """``push_all`` for B closes at once (columns ``[B, n_slots]``, ``ts_ns`` ``[B]``).

        Each slot's previous close is chained through its own valid bars, and all rows come from
        one ``compute_features`` call on the same interleaved (previous close, bar) pairs as
        ``push_all``; the windows end up as B ``push_all`` calls leave them.
        """
        nb, ns = valid.shape
        cap, nf = self.capacity, self.n_features
        vb, vs = np.nonzero(valid)
        order = np.argsort(vs, kind="stable")  # slot by slot, bars in time order
        ss, bb = vs[order], vb[order]
        k = len(ss)
        cs = close[bb, ss].astype(np.float64)
        first = np.ones(k, dtype=bool)
        first[1:] = ss[1:] != ss[:-1]
        prev = np.empty(k)
        prev[1:] = cs[:-1]
        prev[first] = self._prev_close[ss[first]]
        c2 = np.empty(2 * k)
        c2[0::2], c2[1::2] = prev, cs
        h2, l2 = np.ones(2 * k), np.ones(2 * k)
        h2[1::2], l2[1::2] = high[bb, ss], low[bb, ss]
        v2 = np.zeros(2 * k)
        v2[1::2] = volume[bb, ss]
        t2 = np.zeros(2 * k, dtype=np.int64)
        t2[1::2] = ts_ns[bb]
        feats = compute_features(c2, h2, l2, c2, v2, t2)[1::2]
        per_slot = np.bincount(ss, minlength=ns)
        rank = np.arange(k) - (np.cumsum(per_slot) - per_slot)[ss]
        hist = np.empty((ns, cap + int(per_slot.max(initial=0)), nf), dtype=np.float32)
        sl = np.arange(ns)
        hist[:, :cap] = self._buf[sl[:, None], self._pos[:, None] + self._ar]  # the windows now
        hist[ss, cap + rank] = feats
        pushed = np.cumsum(valid, axis=0)
        out = Pushed(hist, cap + pushed, self.count + pushed, np.zeros((nb, ns), dtype=np.float32))
        out.ret[bb, ss] = feats[:, 0]
        # the state B push_all calls leave: the last ``capacity`` rows of each slot, pos 0
        end = cap + per_slot
        last = hist[sl[:, None], (end - cap)[:, None] + self._ar]
        self._buf[:, :cap] = last
        self._buf[:, cap:] = last
        self._pos[:] = 0
        self.count += per_slot
        got = per_slot > 0
        self._prev_close[got] = cs[(np.cumsum(per_slot) - 1)[got]]
        return out

    def ready(self, slot: int, length: int) -> bool:
        return bool(self.count[slot] >= length)

    def window(self, slot: int, length: int | None = None) -> np.ndarray:
        """A view of the slot's last ``length`` rows (default: capacity), oldest first."""
        n = self.capacity if length is None else length
        if not 0 < n <= self.capacity:
            raise ValueError(f"window length {n} outside 1..{self.capacity}")
        end = int(self._pos[slot]) + self.capacity
        return self._buf[slot, end - n : end]

    def gather(self, slots: np.ndarray | list[int], length: int) -> np.ndarray:
        """Copy the windows of ``slots`` into the batch array; returns the view ``[k, length, F]``.

        The view is C-contiguous when ``length == capacity`` (what the infer process uses), so
        onnxruntime reads it without a copy.
        """
        k = len(slots)
        if length != self.capacity:  # not the serving path: a plain copy per window
            out = self.batch[:k, :length]
            for i in range(k):
                out[i] = self.window(int(slots[i]), length)
            return out
        sl = np.asarray(slots, dtype=np.int64)
        idx = self._idx[:k]
        np.add((sl * (2 * self.capacity) + self._pos[sl])[:, None], self._ar, out=idx)
        flat = self._buf.reshape(-1, self.n_features)
        out = self.batch[:k]
        np.take(flat, idx.reshape(-1), axis=0, out=out.reshape(-1, self.n_features), mode="clip")
        return out

    def resize(self, capacity: int) -> None:
        """Change the capacity (a new model with a longer window), keeping the newest rows."""
        if capacity == self.capacity:
            return
        keep = min(capacity, self.capacity)
        old = [self.window(s, keep).copy() for s in range(self.n_slots)]
        self.capacity = capacity
        self._buf = np.zeros((self.n_slots, 2 * capacity, self.n_features), dtype=np.float32)
        self.batch = np.zeros((self.n_slots, capacity, self.n_features), dtype=np.float32)
        self._alloc_index()
        for s, rows in enumerate(old):
            self._buf[s, capacity - keep : capacity] = rows
            self._buf[s, 2 * capacity - keep :] = rows
        self._pos[:] = 0
        self.count = np.minimum(self.count, keep)

    def reset(self, slot: int | None = None) -> None:
        """Forget the history of one slot (or all)."""
        sl = slice(None) if slot is None else slot
        self._buf[sl] = 0.0
        self._pos[sl] = 0
        self.count[sl] = 0
        self._prev_close[sl] = np.nan


class Pushed:
    """What ``push_bars`` pushed: per close b and slot s, the slot's ``count`` after b and the
    window it had then (``gather``); ``ret[b, s]`` is the return feature of a pushed row."""

    def __init__(self, hist: np.ndarray, end: np.ndarray, count: np.ndarray, ret: np.ndarray):
        self._hist = hist  # [slots, rows, F]: the windows before, then the new rows in time order
        self._end = end  # [B, slots]: one past the slot's newest row in hist after close b
        self.count = count
        self.ret = ret

    def gather(self, bars: np.ndarray, slots: np.ndarray, length: int) -> np.ndarray:
        """The windows (last ``length`` rows) of ``slots[i]`` after close ``bars[i]``:
        ``[k, length, F]`` float32, C-contiguous."""
        first = self._end[bars, slots] - length
        return self._hist[slots[:, None], first[:, None] + np.arange(length)]
