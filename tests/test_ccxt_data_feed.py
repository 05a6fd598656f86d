"""The feed on a live venue, as real processes: `gekko run --venue binanceus` (paper) against the
local Binance.US server. The feed drains the venue unpaced, its venue counters reach shared
memory (a skipped diff: a gap and a resync), and a feed killed mid-run comes back from a fresh snapshot: it skips nothing (a replay's
restarted feed skips what its predecessor published; a live one must not wait for that many
new messages before publishing again)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_engine_e2e import (
    _children,
    _cmd,
    _wait_for,
    counter,
    eid,  # noqa: F401  (fixture)
    is_ready,
    shm_entries,
    summary_of,
    wait_counter,
    write_config,
)
from tests.venues import binance_capture as bc

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def server():
    from tests.venues.binance import BinanceServer, CaptureMarket

    market = CaptureMarket(speed=5) if bc.available() else None  # else a synthetic book
    srv = BinanceServer(market=market).start()
    yield srv
    srv.stop()


def test_live_feed_drains_the_venue_and_a_restarted_feed_starts_from_a_snapshot(
    tmp_path: Path,
    eid: str,  # noqa: F811
    server,
) -> None:
    venue = (
        f'\n[[venues]]\nname = "binanceus"\nkind = "binanceus"\n'
        f'rest_url = "{server.rest_url}"\nws_url = "{server.ws_url}"\n'
    )
    cfg = write_config(tmp_path, eid, extra=venue)
    cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg)]
    proc = subprocess.Popen(
        [*cmd, "--venue", "binanceus", "--duration", "120", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert wait_counter(eid, "feed", "md_out", 100, timeout=150), "the feed published nothing"
        assert _wait_for(lambda: counter(eid, "feed", "md_state") == 0, 30)  # connected
        assert counter(eid, "feed", "md_gaps") == 0
        server.faults.arm("gap")  # a skipped diff: counted in shm, the book resynced
        assert wait_counter(eid, "feed", "md_gaps", 1, timeout=30)
        assert wait_counter(eid, "feed", "md_resyncs", 1, timeout=30)
        feeds = [c for c in _children(proc.pid) if "feed" in _cmd(c)]
        assert feeds, "feed worker not found"
        old = feeds[0].pid
        published = counter(eid, "feed", "md_out")
        os.kill(old, signal.SIGKILL)
        assert _wait_for(lambda: is_ready(eid, "feed", not_pid=old), 90)
        # the new feed publishes at once (a fresh snapshot, then the stream): nothing skipped
        assert wait_counter(eid, "feed", "md_out", published + 100, timeout=60)
        assert counter(eid, "feed", "md_gaps") >= 1  # what the killed feed counted is kept
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    resumed = [ln for ln in err.splitlines() if "feed ready" in ln]
    assert len(resumed) == 2 and all("resuming at event 0)" in ln for ln in resumed), resumed
    s = summary_of(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["feed"]
    assert s["ticks"] > 200 and s["consistent"] is True
    assert shm_entries(eid) == []
