"""Append-only files of checksummed frames, for the logs exec keeps beside its venue session:
the write-ahead algo log (``procs.algo_log``) and the storage-off exec journal
(``procs.recovery``).

Why one format for both: each must survive a SIGKILL mid-write. Every frame is
``[u32 length][u32 crc32]`` + payload; a reader stops at the first torn or corrupt frame, and a
writer opening the file cuts such a tail off first, so what follows is appended to whole frames.
Plain ``write`` calls (no fsync): they survive the process, which is what an exec restart
recovers from.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

HEADER = struct.Struct("<II")  # [u32 length][u32 crc32] before each payload


def read_frames(path: str | Path, max_frame: int) -> list[bytes]:
    """The whole frames of ``path`` (none if it does not exist); reading stops at the first
    torn or corrupt frame, or one longer than ``max_frame``."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out: list[bytes] = []
    pos = 0
    while pos + HEADER.size <= len(data):
        n, crc = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        if n > max_frame or start + n > len(data):
            break
        frame = data[start : start + n]
        if zlib.crc32(frame) != crc:
            break
        out.append(frame)
        pos = start + n
    return out


def open_for_append(path: str | Path, max_frame: int) -> int:
    """A write descriptor positioned after the last whole frame (a torn tail is cut off)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    good = sum(HEADER.size + len(f) for f in read_frames(path, max_frame))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)  # trading records: the owner's only
    os.ftruncate(fd, good)
    os.lseek(fd, good, os.SEEK_SET)
    return fd


def append_frame(fd: int, payload: bytes | bytearray) -> None:
    """Write one frame: header and payload in one ``writev``, the rest of a short write after."""
    hdr = HEADER.pack(len(payload), zlib.crc32(payload))
    n = os.writev(fd, (hdr, payload))
    if n < len(hdr) + len(payload):
        rest = memoryview(hdr + bytes(payload))[n:]
        while rest:
            rest = rest[os.write(fd, rest) :]
