"""Workers restarted one after another, in the order that used to take the engine down.

Issue 11: after the feed's restart, the next restart of any other worker (the supervisor's
audit record of it travels on the ``control`` ring) crashed the feed with a
``RingCorruptedError``, and every later restart crashed it again until the engine gave up. Here
the feed, then infer, then the strategy are SIGKILLed: each comes back once, nothing else
restarts, and trading goes on after the last restart.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from tests.test_engine_e2e import (
    _children,
    _cmd,
    _wait_for,
    counter,
    health,
    is_ready,
    running_engine,
    shm_entries,
    summary_of,
    wait_counter,
    write_config,
)

pytestmark = pytest.mark.timeout(240)


def _kill_and_wait_back(proc_pid: int, eid: str, name: str) -> int:
    """SIGKILL worker ``name``; return the pid of its replacement once that reports READY."""
    victims = [c for c in _children(proc_pid) if name in _cmd(c)]
    assert victims, f"{name} worker not found"
    old = victims[0].pid
    os.kill(old, signal.SIGKILL)
    assert _wait_for(lambda: is_ready(eid, name, not_pid=old), 90), f"{name} did not come back"
    return health(eid)[name][0]


@pytest.fixture
def eid() -> str:
    return "r" + uuid.uuid4().hex[:7]


def test_feed_survives_every_later_restart(tmp_path: Path, eid: str) -> None:
    cfg = write_config(tmp_path, eid)
    with running_engine(cfg, tmp_path, eid) as proc:
        assert wait_counter(eid, "exec", "fills", 1), "no trading"
        feed = _kill_and_wait_back(proc.pid, eid, "feed")
        for name in ("infer", "strategy"):
            _kill_and_wait_back(proc.pid, eid, name)
            assert proc.poll() is None, "the engine stopped"
        fills = counter(eid, "exec", "fills")
        assert wait_counter(eid, "exec", "fills", fills + 3, 60), "no fill after the restarts"
        # the restarted feed is the same process all along: it never crashed again
        pid, _, incarnation = health(eid)["feed"]
        assert (pid, incarnation) == (feed, 1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "crashed" not in err and "RingCorruptedError" not in err, err[-3000:]
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["feed", "infer", "strategy"]
    assert s["consistent"] is True
    assert shm_entries(eid) == []
