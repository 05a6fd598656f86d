"""Trial runners that fail on purpose, for tests/test_sweep.py: Ray workers import this module
by name (the test session's working directory is on their path), so they stay module-level.

Which fault a trial gets is read from its ``fast`` parameter: 2 fails on its first attempt
only (a marker file beside the config remembers the attempt across worker processes), 3 always
raises, 4 kills its worker every time, 6 hangs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ops.sweep_trial import TrialResult, TrialSpec, run_trial


def faulty_trial(spec: TrialSpec) -> TrialResult:
    fast = spec.params.get("fast")
    if fast == 2:
        marker = Path(spec.config_path).with_name(f"attempted-{spec.trial}")
        if not marker.exists():
            marker.write_text("1")
            raise RuntimeError("flaky: first attempt")
    elif fast == 3:
        raise RuntimeError("always broken")
    elif fast == 4:
        os._exit(17)  # a worker killed mid-trial
    elif fast == 6:
        time.sleep(60)  # hangs: the executor's timeout cancels it
    return run_trial(spec)
