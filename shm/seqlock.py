"""Seqlock tables: a fixed numpy structured array in shared memory, one writer, lock-free readers.

Why a seqlock: top-of-book, positions, heartbeats and risk state are small rows that one process
updates constantly and many read now and then. A lock would make the writer wait for readers;
a seqlock never does. Each row has its own sequence word: the writer makes it odd, writes the
row, makes it even again (release); a reader copies the row between two reads of the word and
retries if it changed or was odd, so it never returns a torn row.
"""

from __future__ import annotations

import os
import time
import zlib

import numba
import numpy as np

from shm.atomics import (
    fence_acquire,
    fence_release,
    load_acquire,
    load_relaxed,
    store_relaxed,
    store_release,
    u8_ptr,
)
from shm.region import KIND_TABLE, LayoutVersionError, Region

_u64 = numba.uint64
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
TABLE_CONF = 128  # nrows u64, row_size u64, dtype hash u64
TABLE_SEQS = 256


class TornReadError(RuntimeError):
    """A reader gave up after too many retries (the writer died mid-write or never pauses)."""


@numba.njit(cache=True, nogil=True)
def _write_row(seq_addr: int, dst: int, src: int, nbytes: int) -> None:
    s = load_relaxed(_u64(seq_addr))
    store_relaxed(_u64(seq_addr), s + _u64(1))  # odd: write in progress
    fence_release()  # the odd sequence is visible before any byte of the row changes
    d = numba.carray(u8_ptr(_u64(dst)), nbytes)
    r = numba.carray(u8_ptr(_u64(src)), nbytes)
    for k in range(nbytes):
        d[k] = r[k]
    store_release(_u64(seq_addr), s + _u64(2))  # even: the row is complete


@numba.njit(cache=True, nogil=True)
def _read_row(seq_addr: int, src: int, dst: int, nbytes: int, max_tries: int) -> int:
    d = numba.carray(u8_ptr(_u64(dst)), nbytes)
    r = numba.carray(u8_ptr(_u64(src)), nbytes)
    for attempt in range(max_tries):
        s1 = load_acquire(_u64(seq_addr))
        if s1 & _u64(1):
            continue
        for k in range(nbytes):
            d[k] = r[k]
        fence_acquire()  # the copy completes before the second sequence read
        s2 = load_relaxed(_u64(seq_addr))
        if s1 == s2:
            return attempt + 1
    return -1


def _read_retrying(seq_addr: int, src: int, dst: int, nbytes: int, timeout_s: float) -> int:
    """Spin-read; when the writer stays mid-write (preempted on a busy machine), yield the CPU to
    it and try again, until ``timeout_s`` (a writer that died mid-write never finishes)."""
    tries = _read_row(seq_addr, src, dst, nbytes, 2000)
    if tries > 0:
        return tries
    deadline = time.monotonic() + timeout_s
    total = 2000
    while time.monotonic() < deadline:
        _yield()
        tries = _read_row(seq_addr, src, dst, nbytes, 2000)
        if tries > 0:
            return total + tries
        total += 2000
    return -1


def _dtype_hash(dtype: np.dtype) -> int:
    return zlib.crc32(repr(dtype.descr).encode()) & 0x7FFFFFFF


class SeqlockTable:
    """``nrows`` rows of ``dtype`` in a shared region. One process writes; any process reads."""

    def __init__(self, region: Region, dtype: np.dtype) -> None:
        self.region = region
        self.dtype = np.dtype(dtype)
        conf = region.array[TABLE_CONF : TABLE_CONF + 24].view(np.uint64)
        self.nrows = int(conf[0])
        self.row_size = int(conf[1])
        if self.row_size != self.dtype.itemsize:
            raise LayoutVersionError(
                f"table {region.name}: row size {self.row_size} != dtype's {self.dtype.itemsize}"
            )
        self._seq_base = region.addr + TABLE_SEQS
        self._rows_off = _rows_offset(self.nrows)
        self._rows_base = region.addr + self._rows_off
        self.rows = region.array[self._rows_off : self._rows_off + self.nrows * self.row_size].view(
            self.dtype
        )
        self._stage = np.zeros(1, dtype=self.dtype)
        self._stage_addr = int(self._stage.ctypes.data)
        self._out = np.zeros(1, dtype=self.dtype)
        self._out_addr = int(self._out.ctypes.data)
        self.retries = 0

    @classmethod
    def create(cls, engine_id: str, name: str, dtype: np.dtype, nrows: int) -> SeqlockTable:
        dtype = np.dtype(dtype)
        if nrows <= 0:
            raise ValueError("a table needs at least one row")
        size = _rows_offset(nrows) + nrows * dtype.itemsize
        region = Region.create(engine_id, name, size, KIND_TABLE, _dtype_hash(dtype))
        conf = region.array[TABLE_CONF : TABLE_CONF + 24].view(np.uint64)
        conf[0], conf[1], conf[2] = nrows, dtype.itemsize, _dtype_hash(dtype)
        return cls(region, dtype)

    @classmethod
    def attach(
        cls, engine_id: str, name: str, dtype: np.dtype, *, readonly: bool = False
    ) -> SeqlockTable:
        """Attach; a table made with a different row dtype is refused (its layout hash differs).
        ``readonly``: for readers only (``write`` then faults)."""
        layout = _dtype_hash(np.dtype(dtype))
        return cls(Region.attach(engine_id, name, KIND_TABLE, layout, readonly=readonly), dtype)

    def write(self, row: int, values: tuple | np.void | dict) -> None:
        """Replace row ``row`` atomically with respect to readers."""
        if not 0 <= row < self.nrows:
            raise IndexError(f"row {row} out of range 0..{self.nrows - 1}")
        st = self._stage
        if isinstance(values, dict):
            st[0] = self.rows[row]  # a writer's own reads need no lock: it is the only writer
            for k, v in values.items():
                st[k] = v
        else:
            st[0] = values
        _write_row(
            self._seq_base + 8 * row,
            self._rows_base + row * self.row_size,
            self._stage_addr,
            self.row_size,
        )

    def read(self, row: int, timeout_s: float = 0.5) -> np.void:
        """A consistent copy of row ``row``."""
        if not 0 <= row < self.nrows:
            raise IndexError(f"row {row} out of range 0..{self.nrows - 1}")
        out = np.zeros(1, dtype=self.dtype)
        tries = _read_retrying(
            self._seq_base + 8 * row,
            self._rows_base + row * self.row_size,
            int(out.ctypes.data),
            self.row_size,
            timeout_s,
        )
        if tries < 0:
            raise TornReadError(
                f"table {self.region.name}: row {row} stayed in mid-write for {timeout_s}s"
            )
        self.retries += tries - 1
        return out[0]

    def read_tuple(self, row: int, timeout_s: float = 0.5) -> tuple:
        """A consistent copy of row ``row`` as a tuple of Python values (the hot-path read: no
        allocation of a record, no per-field numpy indexing)."""
        if not 0 <= row < self.nrows:
            raise IndexError(f"row {row} out of range 0..{self.nrows - 1}")
        tries = _read_retrying(
            self._seq_base + 8 * row,
            self._rows_base + row * self.row_size,
            self._out_addr,
            self.row_size,
            timeout_s,
        )
        if tries < 0:
            raise TornReadError(
                f"table {self.region.name}: row {row} stayed in mid-write for {timeout_s}s"
            )
        return self._out[0].item()

    def read_all(self) -> np.ndarray:
        """A consistent copy of every row (each row consistent on its own)."""
        out = np.zeros(self.nrows, dtype=self.dtype)
        for i in range(self.nrows):
            out[i] = self.read(i)
        return out

    def version(self, row: int) -> int:
        """The row's sequence word: even and growing by 2 per completed write."""
        return int(
            self.region.array[TABLE_SEQS + 8 * row : TABLE_SEQS + 8 * row + 8].view(np.uint64)[0]
        )

    def close(self) -> None:
        self.rows = None  # type: ignore[assignment]
        self.region.close()

    def unlink(self) -> None:
        self.region.unlink()


def _rows_offset(nrows: int) -> int:
    return (TABLE_SEQS + 8 * nrows + 127) & ~127
