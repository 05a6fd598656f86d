"""`gekko run --venue binanceus` on the shipped config, paper, as real processes against the local
Binance.US server (``python -m tests.venues``, replaying the real capture where ../shared has it).

- It trades out of the box: the shipped strategies trade the simulator's equities, so the venue
  gets the default strategy (ops/venue_run.default_strategy: the momentum taker on its first
  symbol, long only, sized in the quote currency above the venue's minimum notional), the run's
  first lines say so, its orders pass the venue's rules and risk's limits (a real venue's
  position limit is notional: ``[risk] max_position_notional``; 2000 lots of 0.00001 BTC would
  be no position) and fill against the venue's book, and nothing is sent to the venue.
- The feed on a live venue: it drains the venue unpaced, its venue counters reach shared memory
  (a skipped diff: a gap and a resync), and a feed killed mid-run comes back from a fresh
  snapshot: it skips nothing (a replay's restarted feed skips what its predecessor published; a
  live one must not wait for that many new messages before publishing again).

One run proves both (a run of its own each cost ~9 s more).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from tests.test_engine_e2e import _children, _cmd, counter, is_ready, shm_entries
from tests.test_preflight import set_key
from tests.venue_e2e import BASE, VENUES, engine, server, stop, summary, venue_orders, wait_for

pytestmark = pytest.mark.timeout(240)


def test_venue_run_on_the_shipped_config_trades_the_default_strategy_and_its_feed_survives_gap_and_sigkill(  # noqa: E501
    tmp_path: Path,
) -> None:
    v = VENUES["binanceus"]
    key, secret = v.keys()
    eid = "vd" + os.urandom(4).hex()
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "storage.postgres", 'mode = "off"')  # faster; the rest as shipped
    with server(v, key, secret, capture=True) as srv:
        text += (
            f'\n[[venues]]\nname = "binanceus"\nkind = "binanceus"\n'
            f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\n'
        )
        cfg = tmp_path / "gekko.toml"
        cfg.write_text(text)
        cmd = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--venue", v.kind]
        with engine([*cmd, "--duration", "150", "--quiet"], dict(os.environ)) as proc:
            first = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
            assert first[0].startswith("PAPER trading on binanceus"), first
            assert first[1].startswith("default strategy on BTC/USDT: momentum taker"), first
            md_out = lambda n: counter(eid, "feed", "md_out") >= n  # noqa: E731
            assert wait_for(lambda: md_out(100), 150, proc), "the feed published nothing"
            assert wait_for(lambda: counter(eid, "feed", "md_state") == 0, 30, proc)  # connected
            assert counter(eid, "feed", "md_gaps") == 0
            srv.fault("gap")  # a skipped diff: counted in shm, the book resynced
            assert wait_for(lambda: counter(eid, "feed", "md_gaps") >= 1, 30, proc)
            assert wait_for(lambda: counter(eid, "feed", "md_resyncs") >= 1, 30, proc)
            feeds = [c for c in _children(proc.pid) if "feed" in _cmd(c)]
            assert feeds, "feed worker not found"
            old = feeds[0].pid
            published = counter(eid, "feed", "md_out")
            os.kill(old, signal.SIGKILL)
            assert wait_for(lambda: is_ready(eid, "feed", not_pid=old), 90, proc)
            # the new feed publishes at once (a fresh snapshot, then the stream): nothing skipped
            assert wait_for(lambda: md_out(published + 100), 60, proc)
            assert counter(eid, "feed", "md_gaps") >= 1  # what the killed feed counted is kept
            assert wait_for(lambda: counter(eid, "exec", "fills") >= 1, 150, proc)
            out, err = stop(proc)
        st = srv.state()
    assert proc.returncode == 0, err[-4000:]
    assert venue_orders(st) == []  # paper: the venue was only read
    resumed = [ln for ln in err.splitlines() if "feed ready" in ln]
    assert len(resumed) == 2 and all("resuming at event 0)" in ln for ln in resumed), resumed
    s = summary(tmp_path)
    assert [r["worker"] for r in s["restarts"]] == ["feed"]
    assert s["ticks"] > 200 and s["consistent"] is True, s
    pos = s["positions"]["BTC/USDT"]
    assert pos["position"] == pos["position_from_fills"] >= 0  # long only
    assert s["fills"] >= 1, s
    refused = {**s["risk_rejects_by_reason"], **s["venue_rules_rejects_by_reason"]}
    assert not [r for r in refused if "position" in r or "notional" in r], refused
    assert shm_entries(eid) == []
