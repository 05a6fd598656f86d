"""Shared fixtures: unique engine ids so parallel or leftover runs never share shm names."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


@pytest.fixture
def engine_id() -> Iterator[str]:
    """A fresh engine id; every region and semaphore it names is removed afterwards."""
    eid = "t" + uuid.uuid4().hex[:8]
    yield eid
    import posix_ipc

    from shm.region import list_regions, list_semaphores

    for name in list_regions(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_shared_memory(name)
    for name in list_semaphores(eid):
        with contextlib.suppress(Exception):
            posix_ipc.unlink_semaphore(name)


def mp_context() -> mp.context.BaseContext:
    """fork where the OS has it (fast, inherits the numba cache warm), spawn elsewhere."""
    return mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")


@pytest.fixture
def ctx() -> mp.context.BaseContext:
    return mp_context()


def shared_data_dir() -> Path:
    return SHARED / "data"


os.environ.setdefault("GEKKO_TESTING", "1")
