"""Logging set-up: one line per record, plain text or JSON, secrets masked.

Every process of the engine logs to stderr with its name, so one terminal (or journald) shows the
whole engine; ``log_format = "json"`` makes each line a JSON object for log shippers, and then
*every* line the engine writes is one (a shipper reading a container's or a unit's output sees
nothing else): Python warnings are routed through logging, an uncaught traceback is a record,
and what code prints to stderr (and ``gekko run`` to stdout) is wrapped line by line
(``JsonLines``). The fields and the noise silenced on purpose: docs/operations.md ("Logs").
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from typing import Any, TextIO

from ops.secrets import redact

#: third-party warnings that say nothing a Gekko user can act on, silenced in every process.
#: pgserver asks platformdirs for a per-user runtime dir at import (for a lock file); without
#: $XDG_RUNTIME_DIR (containers, CI, ssh, root) platformdirs warns and uses /tmp/runtime-<uid>,
#: which works: the warning is noise on every run.
QUIET_WARNINGS = (r"XDG_RUNTIME_DIR is not set",)


def mask_secrets(text: str) -> str:
    """``text`` as it may be shown: secrets masked (``ops.secrets.redact``: secret-looking keys,
    URL userinfo passwords, libpq ``password=``, values read from ``${ENV}`` or ``*_file``)."""
    return redact(text)


class TextFormatter(logging.Formatter):
    def __init__(self, process: str, engine_id: str = "", incarnation: int = 0) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        msg = mask_secrets(record.getMessage())
        line = f"{ts} {record.levelname:<7} [{self.process}] {msg}"
        if record.exc_info:
            line += "\n" + mask_secrets(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a message's own newlines are escaped)."""

    def __init__(self, process: str, engine_id: str = "", incarnation: int = 0) -> None:
        super().__init__()
        self.process = process
        self.engine_id = engine_id
        self.incarnation = int(incarnation)

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": iso_utc(record.created),
            "level": record.levelname,
            "engine_id": self.engine_id,
            "process": self.process,
            "incarnation": self.incarnation,
            "pid": record.process or os.getpid(),
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            obj["exc"] = mask_secrets(self.formatException(record.exc_info))
        elif record.exc_text:
            obj["exc"] = mask_secrets(record.exc_text)
        return json.dumps(obj, ensure_ascii=False)


class JsonLines:
    """A standard stream in json mode: each line Python code writes to it directly (a status
    line, a ``print`` to stderr, a library's message) becomes one JSON record, logger ``stdout``
    (INFO) or ``stderr`` (WARNING). Only Python's writes: a native library writing to the file
    descriptor itself is not seen."""

    def __init__(self, inner: TextIO, formatter: logging.Formatter, name: str) -> None:
        self.inner = inner
        self.formatter = formatter
        self.name = name
        self.level = logging.INFO if name == "stdout" else logging.WARNING
        self._buf = ""

    def write(self, s: str) -> int:
        self._buf += s
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(line)
        return len(s)

    def flush(self) -> None:
        if self._buf:
            line, self._buf = self._buf, ""
            self._emit(line)
        self.inner.flush()

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        rec = logging.LogRecord(self.name, self.level, "", 0, line.rstrip(), None, None)
        self.inner.write(self.formatter.format(rec) + "\n")

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self.inner, name)


def _plain(stream: Any) -> Any:
    return stream.inner if isinstance(stream, JsonLines) else stream


def iso_utc(created: float) -> str:
    """``2026-12-07T15:41:18.185123Z``: what log shippers parse without a format string."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def setup_logging(
    process: str,
    level: str = "INFO",
    fmt: str = "text",
    *,
    engine_id: str = "",
    incarnation: int = 0,
    stdout: bool = False,
) -> None:
    """Log records of this process to stderr as ``fmt`` ("text" | "json"); ``process`` is the
    worker's name (or supervisor, backtest, guardian), ``incarnation`` its restart count.

    In json mode what Python code writes to stderr itself becomes records too (``JsonLines``),
    and so does stdout with ``stdout=True`` (``gekko run``: its status lines and summary; a
    backtest's printed result stays plain text)."""
    err, out = _plain(sys.stderr), _plain(sys.stdout)
    formatter = (JsonFormatter if fmt == "json" else TextFormatter)(process, engine_id, incarnation)
    handler = logging.StreamHandler(err)
    handler.setFormatter(formatter)
    json_mode = fmt == "json"
    sys.stderr = JsonLines(err, formatter, "stderr") if json_mode else err  # type: ignore[assignment]
    sys.stdout = JsonLines(out, formatter, "stdout") if json_mode and stdout else out  # type: ignore[assignment]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn() becomes a record: JSON in json mode
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    sys.excepthook = _masked_excepthook  # a traceback nobody caught is shown masked too
    threading.excepthook = _thread_excepthook


def _masked_excepthook(typ: type[BaseException], exc: BaseException, tb: object) -> None:
    """An uncaught exception, through the root handler (masked; one JSON record in json
    mode); plain stderr if logging is not set up."""
    if issubclass(typ, KeyboardInterrupt) or not logging.getLogger().handlers:
        import traceback

        text = "".join(traceback.format_exception(typ, exc, tb))  # type: ignore[arg-type]
        sys.stderr.write(mask_secrets(text))
        return
    logging.getLogger("gekko").critical("uncaught exception", exc_info=(typ, exc, tb))  # type: ignore[arg-type]


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("gekko").error(
        "uncaught exception in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )
