"""The files a run leaves in ``var/last_run/``: summary.json and the record as JSON lines.

Why a module of its own: they are the run's evidence for whoever reads it after the engine is
gone (a person, a test, ``gekko report``), written once by the supervisor after its workers
stopped; the supervisor decides what the run was, this only writes it down.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec


def _jsonl(path: Path, messages: Iterable[Any], enc: msgspec.json.Encoder) -> None:
    """One JSON object a line: the message's fields and its ``type``."""
    with open(path, "wb") as f:
        for m in messages:
            f.write(enc.encode({"type": type(m).__name__, **msgspec.structs.asdict(m)}) + b"\n")


def write_run_files(run_dir: Path, summary: dict[str, Any], record: Any, remote: list[Any]) -> None:
    """summary.json, orders.jsonl, fills.jsonl, risk.jsonl (risk's rejections, instrument halts
    and resumes, by time) and, when the bridge delivered any, remote.jsonl (delivery order)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    enc = msgspec.json.Encoder()
    _jsonl(run_dir / "orders.jsonl", record.orders, enc)
    _jsonl(run_dir / "fills.jsonl", record.fills, enc)
    by_time = sorted(record.risk_events + record.halts, key=lambda m: m.ts)
    _jsonl(run_dir / "risk.jsonl", by_time, enc)
    if remote:
        from procs.bridge import remote_to_json

        with open(run_dir / "remote.jsonl", "wb") as f:
            for r in remote:
                f.write(enc.encode(remote_to_json(r)) + b"\n")
