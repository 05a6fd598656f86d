"""Leave a finished process without the interpreter's teardown.

Why: its last garbage collection over every module numba, numpy, scipy and onnxruntime loaded
(and, in the supervisor, the run's whole record) took seconds on a loaded host, after the work
was done: a stopping worker held the run's stop, and ``gekko run`` sat on its pipes after its
summary. Safe where everything is written through and closed explicitly before: a worker
already survives SIGKILL at any instant with nothing lost, and ``gekko run`` / ``gekko
backtest`` stop their servers, remove their regions and write their outputs themselves. Logs
and the standard streams are flushed first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys


def exit_now(code: int) -> None:
    """Flush the logs and the standard streams, then end the process with ``code``."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
