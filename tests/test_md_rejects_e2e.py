"""Bad replay rows end to end: counted per reason in `gekko backtest` and `gekko run`, printed,
stored in summary.json; `[market] on_bad_row = "fail"` stops the run naming file, row, reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_engine_e2e import gekko, write_config

pytestmark = pytest.mark.timeout(120)

# one row of each kind the replay rejects, with the CSV line number it sits on (header = line 1)
BAD_ROWS = {
    "malformed_row": "{t},AAPL,190.00,5",
    "missing_value": "{t},AAPL,,5,190.02,5",
    "bad_time": "soon,AAPL,190.00,5,190.02,5",
    "unparsable": "{t},AAPL,19O.00,5,190.02,5",
    "nan_value": "{t},AAPL,NaN,5,190.02,5",
    "non_positive_price": "{t},AAPL,-190.00,5,190.02,5",
    "bad_size": "{t},AAPL,190.00,-5,190.02,5",
    "crossed": "{t},AAPL,190.05,5,190.01,5",
    "unknown_instrument": "{t},ZZZ,190.00,5,190.02,5",
}
GOOD_ROWS = 400
FIRST_BAD_LINE = 2 + GOOD_ROWS // 2  # the bad rows sit in the middle, in dict order


def _quotes(path: Path) -> Path:
    lines = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    t = 1_700_000_000 * 10**9
    good = [
        f"{t + k * 1_000_000},{sym},{px:.2f},10,{px + 0.02:.2f},10"
        for k in range(GOOD_ROWS)
        for sym, px in [("AAPL" if k % 2 else "MSFT", (190.0 if k % 2 else 410.0) + (k % 7) * 0.01)]
    ]
    bad = [
        row.format(t=t + GOOD_ROWS // 2 * 1_000_000 + i) for i, row in enumerate(BAD_ROWS.values())
    ]
    lines += good[: GOOD_ROWS // 2] + bad + good[GOOD_ROWS // 2 :]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, eid: str, on_bad_row: str = "skip") -> Path:
    q = _quotes(tmp_path / "quotes.csv")
    cfg = write_config(
        tmp_path,
        eid,
        market=(
            f'source = "replay"\nrate_hz = 20000.0\nreplay_quotes = "{q}"\n'
            f'on_bad_row = "{on_bad_row}"'
        ),
    )
    text = cfg.read_text()
    # no record, no model: only the market data path matters here (and a fast start)
    at = text.index("\nmode = ", text.index("[storage.postgres]")) + 1
    text = text[:at] + 'mode = "off"' + text[text.index("\n", at) :]
    at = text.index("\nenabled = ", text.index("\n[inference]")) + 1
    text = text[:at] + "enabled = false" + text[text.index("\n", at) :]
    cfg.write_text(text)
    assert f'on_bad_row = "{on_bad_row}"' in text
    return cfg


EXPECTED = dict.fromkeys(BAD_ROWS, 1)
PRINTED = "market data rejected: 9 (" + ", ".join(f"{k} 1" for k in sorted(BAD_ROWS)) + ")"


def test_backtest_counts_each_bad_row_by_reason(tmp_path: Path, engine_id: str) -> None:
    cfg = _config(tmp_path, engine_id)
    out = tmp_path / "bt.json"
    r = gekko("backtest", "--config", str(cfg), "--json", str(out), timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["md_rejected_by_reason"] == EXPECTED
    assert s["md_rejected"] == len(BAD_ROWS)
    assert s["ticks"] == GOOD_ROWS
    assert PRINTED in r.stdout
    # the first few are logged with file and row, the rest only counted
    assert f"quotes.csv row {FIRST_BAD_LINE}: malformed_row" in r.stderr
    assert r.stderr.count("market data rejected:") == 6  # 5 rows + "further ... counted"
    assert "Traceback" not in r.stderr


def test_run_counts_each_bad_row_by_reason(tmp_path: Path, engine_id: str) -> None:
    cfg = _config(tmp_path, engine_id)
    r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "20", timeout=90)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    assert s["md_rejected_by_reason"] == EXPECTED
    assert s["md_rejected"] == len(BAD_ROWS)
    assert s["ticks"] == GOOD_ROWS
    assert s["counters"]["feed"]["md_rej_crossed"] == 1
    assert PRINTED in r.stdout
    assert "Traceback" not in r.stderr


def test_on_bad_row_fail_stops_backtest_and_run_naming_the_row(
    tmp_path: Path, engine_id: str
) -> None:
    cfg = _config(tmp_path, engine_id, on_bad_row="fail")
    where = f"quotes.csv row {FIRST_BAD_LINE}: malformed_row"
    r = gekko("backtest", "--config", str(cfg), timeout=120)
    assert r.returncode == 1, r.stderr[-3000:]
    assert where in r.stderr and 'on_bad_row = "fail"' in r.stderr
    assert "Traceback" not in r.stderr

    r = gekko("run", "--config", str(cfg), "--until-feed-done", "--duration", "20", timeout=90)
    assert r.returncode == 1, r.stderr[-3000:]
    assert where in r.stderr
    s = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    assert s["exit_code"] == 1
    assert where in s["stop_reason"] and s["stop_reason"].startswith("feed stopped the run")
    assert not s["restarts"]  # stopped, not restarted into the same row again
    assert "Traceback" not in r.stderr


def test_restarted_feed_counts_each_rejected_row_once(tmp_path: Path, engine_id: str) -> None:
    """A restarted feed re-reads the replay from its start to find its place: the rows it
    rejects again on the way must not be counted twice, and no good row is lost or repeated."""
    cfg = _config(tmp_path, engine_id)
    text = cfg.read_text().replace("rate_hz = 20000.0", "rate_hz = 100.0")  # ~4 s of data
    cfg.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--until-feed-done"]
        + ["--duration", "60", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        feed = None
        for line in proc.stderr:  # type: ignore[union-attr]
            if "started feed (pid" in line and feed is None:
                feed = int(line.split("started feed (pid ")[1].split(",")[0])
            if "market data rejected" in line:  # mid-replay, past the bad rows
                break
        assert feed is not None
        os.kill(feed, signal.SIGKILL)
        err = proc.stderr.read()  # type: ignore[union-attr]
        assert proc.wait(90) == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "feed exited with code -9: restarting" in err
    s = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    assert s["md_rejected_by_reason"] == EXPECTED
    assert s["ticks"] == GOOD_ROWS
