"""Anchors of the audit chain: its head, written outside the database it protects.

A hash chain shows a row changed, removed or added in its middle. It cannot show rows cut off
its end, nor a chain re-hashed from a changed row onwards by someone who can write the database
and knows the (public) algorithm. An anchor — engine, seq and hash of the head, and when — kept
where the database's users cannot write closes both: ``gekko db audit --verify`` checks every
anchor against the chain (``ops.store.audit_verify``).

Where: each anchor is appended to the engine's anchor journal ``<journal_dir>/<engine>.anchors``
(the record journal's frames: length, crc32, MessagePack; never truncated, unlike the record
journal, which is emptied after every commit) and, when ``[audit] anchor_file`` is set, as one
JSON line to that file (O_APPEND, fsync'd: it may be an append-only file, ``chattr +a``, or on a
mount another host collects). An anchor is written after its commit, never before: it names
only what the database holds durably.

When: the recorder anchors every ``[audit] anchor_every`` records, ``anchor_interval_s`` after
an un-anchored record at the latest, and when it stops; a write outside a run (a CLI command,
the supervisor's ``run.stop``) anchors its own head.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from ops.store.audit_chain import Head

log = logging.getLogger("gekko.audit")

_HDR = struct.Struct("<II")  # the record journal's frame header (ops/store/journal.py)


class Anchor(msgspec.Struct, array_like=True, frozen=True):
    engine_id: str
    seq: int
    hash: bytes
    wall_ns: int
    run_id: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "engine": self.engine_id,
                "seq": self.seq,
                "hash": self.hash.hex(),
                "ts_ns": self.wall_ns,
                "run_id": self.run_id,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str) -> Anchor:
        d = json.loads(line)
        return cls(str(d["engine"]), int(d["seq"]), bytes.fromhex(d["hash"]), int(d["ts_ns"]),
                   int(d.get("run_id", 0)))  # fmt: skip


def journal_file(cfg: Any, engine_id: str | None = None) -> Path:
    """The engine's anchor journal, beside its record journals."""
    from ops.store.sink import journal_dir

    return journal_dir(cfg) / f"{engine_id or cfg.engine.id}.anchors"


@contextlib.contextmanager
def _locked_append(path: Path) -> Any:
    """An O_APPEND descriptor under an exclusive lock (the recorder, the supervisor and CLI
    commands may anchor at the same moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # read: a torn tail
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def _append_journal(path: Path, a: Anchor) -> None:
    from ops.store.journal import valid_length

    frame = msgspec.msgpack.encode(a)
    with _locked_append(path) as fd:
        good = valid_length(path)
        if good != os.fstat(fd).st_size:  # a torn frame from a crash: cut it, or it hides ours
            os.ftruncate(fd, good)
        _write_all(fd, _HDR.pack(len(frame), zlib.crc32(frame)) + frame)


def _append_line(path: Path, a: Anchor) -> None:
    with _locked_append(path) as fd:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # never truncated: append-only
        _write_all(fd, (b"\n" if torn else b"") + a.to_json().encode() + b"\n")


def write_anchor(cfg: Any, head: Head, run_id: int = 0) -> bool:
    """Anchor ``head`` (committed): the anchor journal, then ``[audit] anchor_file``.
    A target that cannot be written is logged as an error naming it; returns all written?"""
    a = Anchor(head.engine_id, head.seq, bytes(head.hash), time.time_ns(), run_id)
    ok = True
    targets = [(journal_file(cfg, head.engine_id), _append_journal)]
    if cfg.audit.anchor_file:
        targets.append((Path(cfg.audit.anchor_file), _append_line))
    for path, write in targets:
        try:
            write(path, a)
        except OSError as exc:
            ok = False
            log.error("audit: chain anchor seq %d not written to %s (%s)", a.seq, path, exc)
    log.info("audit: chain of %s anchored at seq %d (%s)", a.engine_id, a.seq, a.hash.hex()[:16])
    return ok


def read_anchors(paths: Iterable[Path]) -> tuple[list[Anchor], list[str]]:
    """Every anchor in these files (journal frames or JSON lines); problems as lines."""
    from ops.store.journal import iter_frames

    out: list[Anchor] = []
    problems: list[str] = []
    for p in paths:
        if not p.exists():
            problems.append(f"anchor file {p} does not exist")
            continue
        if p.suffix == ".anchors":
            for f in iter_frames(p):
                try:
                    out.append(msgspec.msgpack.decode(f, type=Anchor))
                except msgspec.DecodeError as exc:
                    problems.append(f"{p}: an anchor that does not decode ({exc})")
            continue
        for k, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(Anchor.from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{p}:{k}: not an anchor ({exc})")
    return out, problems


def anchor_paths(cfg: Any, extra: Iterable[str] = ()) -> list[Path]:
    """Where anchors of this configuration's engines are: the anchor journals, the anchor
    file, and any given by hand (``--anchors``)."""
    from ops.store.sink import journal_dir

    paths = sorted(journal_dir(cfg).glob("*.anchors"))
    if cfg.audit.anchor_file:
        paths.append(Path(cfg.audit.anchor_file))
    paths += [Path(x) for x in extra]
    return paths


class AnchorPolicy:
    """The recorder's: anchor every N records, T seconds after an un-anchored one, at close."""

    def __init__(self, cfg: Any, run_id: int) -> None:
        self.cfg, self.run_id = cfg, run_id
        self.every = cfg.audit.anchor_every
        self.interval = cfg.audit.anchor_interval_s
        self.head: Head | None = None  # the last committed head not yet anchored
        self.unanchored = 0
        self.last_at = time.monotonic()
        self.written = 0

    def note(self, head: Head | None) -> None:
        """A write committed (``head``: what it appended, or None)."""
        if head is None or not head.added:
            return
        self.head = head
        self.unanchored += head.added
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        if self.head is None:
            return
        if self.unanchored >= self.every or now - self.last_at >= self.interval:
            self.anchor(now)

    def anchor(self, now: float | None = None) -> None:
        if self.head is None:
            return
        write_anchor(self.cfg, self.head, self.run_id)
        self.written += 1
        self.head, self.unanchored = None, 0
        self.last_at = time.monotonic() if now is None else now
