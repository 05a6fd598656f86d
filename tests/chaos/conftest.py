"""Chaos suite options: the seed and the length of a run come from the environment.

- ``CHAOS_SEED=<n>``: replay one seed (default: the bounded run's fixed seed; the long form draws
  a fresh one and prints it).
- ``CHAOS_SECONDS=<s>``: the length of the long run. ``make chaos`` runs the bounded form first
  (one seeded 60 s run, 14 faults: ``-m chaos_bounded``), then the long form (``-m
  chaos_long``, ``CHAOS_SECONDS``, default 600). Neither is in ``make test``, which has to stay
  inside its 15 minutes; the harness's own tests are.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

BOUNDED_SECONDS = 60.0
# the bounded run's seed, chosen for what it covers: every worker hit; the feed killed twice;
# exec killed while PostgreSQL is down; strategy and exec stopped past the heartbeat timeout
# (hung); short stops; Redis down; an operator burst while exec is stopped
BOUNDED_SEED = 240


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "chaos_long: the long chaos run (make chaos); skipped unless CHAOS_SECONDS is set",
    )
    config.addinivalue_line(
        "markers", "chaos_bounded: the seeded 60 s chaos run (make chaos, before the long one)"
    )


@pytest.fixture
def chaos_seed() -> int:
    env = os.environ.get("CHAOS_SEED", "")
    return int(env) if env else BOUNDED_SEED


@pytest.fixture
def chaos_long_seed() -> int:
    env = os.environ.get("CHAOS_SEED", "")
    return int(env) if env else random.SystemRandom().randrange(1, 1_000_000)


@pytest.fixture
def chaos_seconds() -> float:
    return float(os.environ.get("CHAOS_SECONDS", "") or BOUNDED_SECONDS)


@pytest.fixture
def chaos_dir() -> Iterator[Path]:
    """A short directory under /tmp for the run's config, logs and var/ (the embedded
    PostgreSQL's socket lives in var/pg: 108-byte limit; its owner, not root, must be able to
    reach it, which pytest's 0700 tmp_path does not allow). Kept when the run failed."""
    d = Path(tempfile.mkdtemp(prefix="gkch", dir="/tmp"))
    d.chmod(0o755)
    yield d
    if not (d / "FAILED").exists():
        shutil.rmtree(d, ignore_errors=True)
