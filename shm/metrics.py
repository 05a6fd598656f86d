"""Counters and log-linear latency histograms in shared memory.

Why in shm: a process records on its hot path with a few plain stores into memory it alone
writes (no lock, no system call, no message); any other process — the supervisor's status line,
``gekko top``, the Prometheus exporter — maps the region and reads it whenever it likes.

Histogram buckets are HDR-style log-linear: values below 128 ns get a bucket each; above, every
power of two is split into 128 linear sub-buckets, so any recorded value is known to within 1/128
(better than two significant digits) from 1 ns up to 2^35 ns (34 s), in 4,480 buckets. Counts
are 8-byte aligned words, each written by one process, so a reader never sees a torn word; a
reader may see a bucket updated a moment before the total count, which is harmless for
percentiles.
"""

from __future__ import annotations

import numpy as np

from shm.region import KIND_METRICS, LayoutVersionError, Region

SUB_BITS = 7
SUB = 1 << SUB_BITS  # 128 sub-buckets per octave
MAX_EXP = 28  # octaves above the linear range: up to 2^(7+28) ns
NBUCKETS = SUB + MAX_EXP * SUB
NAME_LEN = 32
METRICS_LAYOUT = 1
# per histogram: count, sum, min, max, then buckets
H_COUNT, H_SUM, H_MIN, H_MAX, H_BUCKETS = 0, 1, 2, 3, 4
H_WORDS = H_BUCKETS + NBUCKETS

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def bucket_index(v: int) -> int:
    """Bucket of a value in ns (values are clamped to the histogram's range)."""
    if v < SUB:
        return v if v > 0 else 0
    e = v.bit_length() - SUB_BITS - 1
    if e >= MAX_EXP:
        return NBUCKETS - 1
    return SUB + e * SUB + ((v >> e) - SUB)


def bucket_value(i: int) -> int:
    """A representative value (the middle) of bucket ``i``."""
    if i < SUB:
        return i
    e, m = divmod(i - SUB, SUB)
    lo = (m + SUB) << e
    return lo + ((1 << e) - 1) // 2


class Histogram:
    """A view of one histogram's words; ``record`` is the hot-path call."""

    __slots__ = ("name", "_w", "_off")

    def __init__(self, name: str, words: memoryview, offset: int) -> None:
        self.name = name
        self._w = words
        self._off = offset

    def record(self, v: int) -> None:
        """Record one value in ns (negative values count as 0)."""
        w = self._w
        o = self._off
        if v < SUB:
            i = v if v > 0 else 0
            v = i
        else:
            e = v.bit_length() - SUB_BITS - 1
            i = NBUCKETS - 1 if e >= MAX_EXP else SUB + e * SUB + ((v >> e) - SUB)
        w[o + H_BUCKETS + i] += 1
        w[o + H_COUNT] += 1
        w[o + H_SUM] += v
        if v > w[o + H_MAX]:
            w[o + H_MAX] = v
        if v < w[o + H_MIN] or w[o + H_COUNT] == 1:
            w[o + H_MIN] = v

    def snapshot(self) -> HistogramSnapshot:
        a = np.frombuffer(self._w, dtype=np.uint64, count=H_WORDS, offset=self._off * 8).copy()
        return HistogramSnapshot(self.name, a)

    def reset(self) -> None:
        for k in range(H_WORDS):
            self._w[self._off + k] = 0


class HistogramSnapshot:
    """A copy of a histogram's words; merge several (one per process) and read percentiles."""

    def __init__(self, name: str, words: np.ndarray | None = None) -> None:
        self.name = name
        self.words = words if words is not None else np.zeros(H_WORDS, dtype=np.uint64)

    @property
    def count(self) -> int:
        return int(self.words[H_BUCKETS:].sum())

    @property
    def max(self) -> int:
        return int(self.words[H_MAX])

    @property
    def min(self) -> int:
        return int(self.words[H_MIN])

    @property
    def mean(self) -> float:
        c = int(self.words[H_COUNT])
        return float(self.words[H_SUM]) / c if c else float("nan")

    def merge(self, other: HistogramSnapshot) -> HistogramSnapshot:
        w = self.words.copy()
        o = other.words
        w[H_BUCKETS:] += o[H_BUCKETS:]
        w[H_COUNT] += o[H_COUNT]
        w[H_SUM] += o[H_SUM]
        w[H_MAX] = max(w[H_MAX], o[H_MAX])
        if self.count == 0:
            w[H_MIN] = o[H_MIN]
        elif other.count:
            w[H_MIN] = min(w[H_MIN], o[H_MIN])
        return HistogramSnapshot(self.name, w)

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0..100), nan when empty; exact max at 100."""
        b = self.words[H_BUCKETS:]
        total = int(b.sum())
        if total == 0:
            return float("nan")
        if p >= 100:
            return float(self.max)
        rank = max(1, int(np.ceil(round(total * p / 100.0, 6))))  # round: 99.9% of 50000 is 49950
        i = int(np.searchsorted(np.cumsum(b), rank))
        return float(min(bucket_value(i), self.max)) if self.max else float(bucket_value(i))

    def summary(self) -> dict[str, float]:
        out = {f"p{p:g}": self.percentile(p) for p in PERCENTILES}
        out["max"] = float(self.max) if self.count else float("nan")
        out["count"] = float(self.count)
        return out


class MetricsRegion:
    """One process's counters and histograms, declared by name at creation."""

    def __init__(self, region: Region) -> None:
        self.region = region
        conf = region.array[128:152].view(np.uint64)
        self.n_counters, self.n_hists = int(conf[0]), int(conf[1])
        if int(conf[2]) != NBUCKETS:
            raise LayoutVersionError(
                f"metrics {region.name}: {int(conf[2])} buckets, expected {NBUCKETS}"
            )
        names_off = 256
        n_names = self.n_counters + self.n_hists
        raw = bytes(region.buf[names_off : names_off + n_names * NAME_LEN])
        names = [
            raw[i * NAME_LEN : (i + 1) * NAME_LEN].rstrip(b"\0").decode() for i in range(n_names)
        ]
        self.counter_names = names[: self.n_counters]
        self.hist_names = names[self.n_counters :]
        words_off = _words_offset(n_names)
        nwords = self.n_counters + self.n_hists * H_WORDS
        self._w = region.buf[words_off : words_off + nwords * 8].cast("Q")
        self._cidx = {n: i for i, n in enumerate(self.counter_names)}
        self.histograms = {
            n: Histogram(n, self._w, self.n_counters + k * H_WORDS)
            for k, n in enumerate(self.hist_names)
        }

    @classmethod
    def create(
        cls, engine_id: str, name: str, counters: list[str], histograms: list[str]
    ) -> MetricsRegion:
        names = list(counters) + list(histograms)
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        for n in names:
            if len(n.encode()) > NAME_LEN:
                raise ValueError(f"metric name {n!r} is longer than {NAME_LEN} bytes")
        size = _words_offset(len(names)) + (len(counters) + len(histograms) * H_WORDS) * 8
        region = Region.create(engine_id, name, size, KIND_METRICS, METRICS_LAYOUT)
        conf = region.array[128:152].view(np.uint64)
        conf[0], conf[1], conf[2] = len(counters), len(histograms), NBUCKETS
        for i, n in enumerate(names):
            region.buf[256 + i * NAME_LEN : 256 + i * NAME_LEN + len(n.encode())] = n.encode()
        return cls(region)

    @classmethod
    def attach(cls, engine_id: str, name: str, *, readonly: bool = False) -> MetricsRegion:
        region = Region.attach(engine_id, name, KIND_METRICS, METRICS_LAYOUT, readonly=readonly)
        return cls(region)

    # --- hot path ------------------------------------------------------------------------------
    def counter_index(self, name: str) -> int:
        return self._cidx[name]

    def inc(self, name: str, n: int = 1) -> None:
        self._w[self._cidx[name]] += n

    def inc_i(self, index: int, n: int = 1) -> None:
        """Increment by index (resolve it once with ``counter_index``)."""
        self._w[index] += n

    def set(self, name: str, value: int) -> None:
        self._w[self._cidx[name]] = max(0, int(value))

    def hist(self, name: str) -> Histogram:
        return self.histograms[name]

    # --- readers -------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {n: int(self._w[i]) for i, n in enumerate(self.counter_names)}

    def snapshots(self) -> dict[str, HistogramSnapshot]:
        return {n: h.snapshot() for n, h in self.histograms.items()}

    def close(self) -> None:
        self.histograms = {}
        self._w.release()
        self.region.close()

    def unlink(self) -> None:
        self.region.unlink()


def _words_offset(n_names: int) -> int:
    return (256 + n_names * NAME_LEN + 127) & ~127


def merge_snapshots(snaps: list[HistogramSnapshot], name: str = "merged") -> HistogramSnapshot:
    out = HistogramSnapshot(name)
    for s in snaps:
        out = out.merge(s)
    return out
