"""Logging set-up: one line per record, plain text or JSON, secrets masked.

Every process of the engine logs to stderr with its name, so one terminal (or journald) shows the
whole engine; ``log_format = "json"`` makes each line a JSON object for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from ops.secrets import redact


def mask_secrets(text: str) -> str:
    """``text`` as it may be shown: secrets masked (``ops.secrets.redact``: secret-looking keys,
    URL userinfo passwords, libpq ``password=``, values read from ``${ENV}`` or ``*_file``)."""
    return redact(text)


class TextFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
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
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": record.created,
            "level": record.levelname,
            "process": self.process,
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
        }
        if record.exc_info:
            obj["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(obj)


def setup_logging(process: str, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process) if fmt == "json" else TextFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    sys.excepthook = _masked_excepthook  # a traceback nobody caught is shown masked too


def _masked_excepthook(typ: type[BaseException], exc: BaseException, tb: object) -> None:
    import traceback

    text = "".join(traceback.format_exception(typ, exc, tb))  # type: ignore[arg-type]
    sys.stderr.write(mask_secrets(text))
