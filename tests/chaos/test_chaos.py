"""The chaos suite: a live ``gekko run`` survives seeded faults with every invariant intact.

``make chaos`` runs ``test_chaos_bounded`` (one seeded 60 s run, 14 faults), then
``test_chaos_long`` (``CHAOS_SECONDS``, default 600). A failure prints the seed and the
replay command, the faults, what the harness did and when, each violated invariant and the
engine's error lines (tests/chaos/harness.py ``ChaosResult.report``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.conftest import BOUNDED_SECONDS
from tests.chaos.harness import ChaosResult, run_chaos
from tests.chaos.recovery import recovery_table


def _run(seed: int, seconds: float, tmp: Path) -> ChaosResult:
    print(f"\nchaos: seed {seed}, {seconds:g}s (replay: CHAOS_SEED={seed})", flush=True)
    res = run_chaos(seed, seconds, tmp)
    print(recovery_table([res]), flush=True)
    if res.violations:  # keep the run's directory (logs, var/) for reading
        (tmp / "FAILED").write_text(res.report())
    return res


@pytest.mark.chaos_bounded
@pytest.mark.timeout(600)
def test_chaos_bounded(chaos_dir: Path, chaos_seed: int) -> None:
    res = _run(chaos_seed, BOUNDED_SECONDS, chaos_dir)
    if res.violations:
        pytest.fail(res.report(), pytrace=False)


@pytest.mark.chaos_long
@pytest.mark.timeout(0)
@pytest.mark.skipif(not os.environ.get("CHAOS_SECONDS"), reason="long form: make chaos")
def test_chaos_long(chaos_dir: Path, chaos_long_seed: int, chaos_seconds: float) -> None:
    res = _run(chaos_long_seed, chaos_seconds, chaos_dir)
    if res.violations:
        pytest.fail(res.report(), pytrace=False)
