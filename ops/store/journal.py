"""An append-only, fsync'd, replayable journal of trading records.

The recorder appends every batch of orders, order events, fills and risk events here *before*
it writes them to PostgreSQL and before it reads on (the ring keeps its cursor where the batch
began until then). So a record is always in at least one of: the ring, the journal, the
database. While the database is down the journal grows; when it is back, the recorder replays
it (the database's idempotency keys make a record written twice count once) and truncates it.

Format: one file, a sequence of frames ``[u32 length][u32 crc32][MessagePack of a message]``.
A crash mid-append leaves a torn last frame: reading stops there (counted in ``torn``), and the
next append first cuts the file back to the last whole frame.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import Message

_HDR = struct.Struct("<II")
MAX_FRAME = 1 << 24


class Journal:
    """One journal file. Not thread-safe; one writer process (the recorder), any readers."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._enc = msgspec.msgpack.Encoder()
        self._fd: int | None = None
        self.torn = 0  # torn or corrupt tails found (and cut off)
        self.appended = 0  # records appended since the last truncate

    # --- writing ---------------------------------------------------------------------------------
    def _open(self) -> int:
        if self._fd is None:
            good = valid_length(self.path)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            if good != os.fstat(self._fd).st_size:
                self.torn += 1
                os.ftruncate(self._fd, good)
            os.lseek(self._fd, good, os.SEEK_SET)
        return self._fd

    def append(self, msgs: Iterable[Any], frames: Iterable[bytes] | None = None) -> int:
        """Append messages (or their already-encoded ``frames``) durably; returns how many."""
        parts: list[bytes] = []
        for f in frames if frames is not None else (self._enc.encode(m) for m in msgs):
            parts.append(_HDR.pack(len(f), zlib.crc32(f)))
            parts.append(f)
        if not parts:
            return 0
        fd = self._open()
        data = b"".join(parts)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(fd)
        self.appended += len(parts) // 2
        return len(parts) // 2

    def truncate(self) -> None:
        """Everything journaled is in the database now: start empty."""
        fd = self._open()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        if self.fsync:
            os.fsync(fd)
        self.appended = 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(1 for _ in iter_frames(self.path))

    def frames(self) -> Iterator[bytes]:
        return iter_frames(self.path)

    def records(self) -> Iterator[Any]:
        return read_records(self.path)


def iter_frames(path: str | Path) -> Iterator[bytes]:
    """The whole frames of a journal file, in order (a torn or corrupt tail ends the iteration)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return
    pos, end = 0, len(data)
    while pos + _HDR.size <= end:
        n, crc = _HDR.unpack_from(data, pos)
        start = pos + _HDR.size
        if n > MAX_FRAME or start + n > end:
            return
        frame = data[start : start + n]
        if zlib.crc32(frame) != crc:
            return
        yield frame
        pos = start + n


def valid_length(path: str | Path) -> int:
    """Bytes of the file covered by whole, intact frames."""
    total = 0
    for f in iter_frames(path):
        total += _HDR.size + len(f)
    return total


_DEC = msgspec.msgpack.Decoder(Message)


def read_records(path: str | Path) -> Iterator[Any]:
    """Decoded messages; a frame that does not decode (a newer version's type) is skipped."""
    for f in iter_frames(path):
        try:
            yield _DEC.decode(f)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
