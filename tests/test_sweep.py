"""gekko sweep: a small sweep on a local Ray runtime (ONE for this module), retries and failures
reported, walk-forward, Optuna, results in PostgreSQL, windows and parameter points, [sweep]
validation. Backtests are tiny (a few hundred synthetic events) to keep this fast."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from ops.config import ConfigError, parse_config
from ops.sweep_trial import TrialSpec, Window

TINY = """
[engine]
id = "tsweep"
var_dir = "{var}"

[market]
source = "synthetic"
seed = 11

[backtest]
events = 500

[inference]
enabled = false

[storage.postgres]
mode = "{pg}"

[portfolio]
equity_interval_s = 0.005
benchmark = ""

[sweep]
{sweep}

[[instruments]]
instrument_id = 1
symbol = "AAPL"
tick_size = 0.01
initial_price = 190.0

[[strategies]]
id = 1
path = "engine.strategies.momentum:MomentumTaker"
instruments = ["AAPL"]
[strategies.params]
fast = 3
slow = 12
size = 10
"""


def write_config(tmp: Path, sweep: str, pg: str = "off") -> Path:
    p = tmp / "sweep.toml"
    p.write_text(TINY.format(var=tmp / "var", pg=pg, sweep=sweep))
    return p


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[object]:
    """The one local Ray runtime of these tests (2 CPUs, no dashboard), shut down after them;
    its directory is short (Ray's sockets live in it) and registered for the leak check."""
    import ray

    from ops.sweep_exec import DriverState
    from tests import _leaks

    before = DriverState()  # Ray's environment and SIGTERM handler: not for the later tests
    base = tempfile.mkdtemp(prefix="gkray", dir="/tmp")
    _leaks.register_dir(base)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=base,
    )
    yield ray
    ray.shutdown()
    before.restore()
    shutil.rmtree(base, ignore_errors=True)


def test_grid_walk_forward_on_ray_into_postgres(
    ray_runtime: object,
    tmp_path: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """2 points x 2 windows on Ray: one point the strategy refuses (fast >= slow) is reported
    invalid on each window, never missing; fold 0's best runs out of sample on window 1; the
    sweep and every trial are rows in PostgreSQL; the HTML report is written."""
    import psycopg

    from ops.cli import main

    monkeypatch.chdir(tmp_path)
    cfg = write_config(
        tmp_path, "windows = 2\n[sweep.params]\nfast = [2, 20]\nslow = [12]", pg=pg_dsn
    )
    js, html = tmp_path / "out.json", tmp_path / "r.html"
    code = main(["sweep", "--config", str(cfg), "--json", str(js), "--report", str(html)])
    assert code == 0
    table = capsys.readouterr().out
    assert "walk-forward (optimise on window k, test on k+1)" in table
    assert "invalid" in table and "fast=2 slow=12" in table and "sweep 1 in PostgreSQL" in table
    s = json.loads(js.read_text())
    assert s["trials"] == 4 and s["not_ok"] == {"invalid": 2, "failed": 0, "timeout": 0}
    assert [w["seed"] for w in s["windows"]] == [11, 12]
    assert [w["ok"] for w in s["per_window"]] == [1, 1]
    (fold,) = s["folds"]
    assert fold["params"] == {"fast": 2, "slow": 12}
    assert fold["in_sample"]["window"] == 0 and fold["out_of_sample"]["window"] == 1
    assert fold["out_of_sample"]["status"] == "ok"
    assert s["per_window"][0]["deflated_sharpe"] is not None
    with psycopg.connect(pg_dsn) as conn:
        (sid, n, failed) = conn.execute("SELECT sweep_id, trials, failed FROM sweeps").fetchone()
        assert sid == s["sweep_id"] and (n, failed) == (4, 2)
        rows = conn.execute(
            "SELECT window_no, params->>'fast', status, error FROM sweep_trials"
            " WHERE sweep_id = %s ORDER BY trial",
            (sid,),
        ).fetchall()
    assert sorted((w, f, st) for w, f, st, _ in rows) == [
        (0, "2", "ok"), (0, "20", "invalid"), (1, "2", "ok"), (1, "20", "invalid"),
    ]  # fmt: skip
    assert all("fast" in e for _, f, _, e in rows if f == "20")  # why it is invalid
    page = html.read_text()
    assert "Walk-forward" in page and "invalid" in page


def test_retries_and_failures_are_reported_never_missing(
    ray_runtime: object, tmp_path: Path
) -> None:
    """A trial failing once is retried and completes; one that always raises and one whose
    worker dies come back failed after max_retries + 1 attempts, with the error; one that hangs
    is cancelled at the timeout and reported."""
    from ops.sweep_exec import RayExecutor
    from ops.sweep_search import run_search
    from ops.sweep_trial import trial_tables
    from tests._sweep_faults import faulty_trial

    path = write_config(
        tmp_path, "windows = 1\nwalk_forward = false\n[sweep.params]\nfast = [2, 3, 4]"
    )
    cfg = parse_config(path.read_text(), path)
    w = Window(0, "seed 11", seed=11, events=300)
    tables = trial_tables(path.read_text())

    def spec(n: int, window: Window, params: dict, role: str, fold: int | None) -> TrialSpec:
        return TrialSpec(n, window, params, role, fold, tables, str(path), os.getcwd(), 0)

    ex = RayExecutor(faulty_trial, max_retries=1)
    try:
        out = run_search(cfg, [w], spec, ex)
    finally:
        ex.close()
    hang = msgspec.structs.replace(
        cfg, sweep=msgspec.structs.replace(cfg.sweep, params={"fast": [6]})
    )
    ex = RayExecutor(faulty_trial, max_retries=1, timeout_s=2.0)
    try:
        (hung,) = run_search(hang, [w], spec, ex).trials
    finally:
        ex.close()
    assert ray_runtime.is_initialized()  # type: ignore[attr-defined]  (not ours to stop)
    by_fast = {t.params["fast"]: t for t in out.trials}
    assert sorted(by_fast) == [2, 3, 4]
    assert by_fast[2].status == "ok" and (tmp_path / "attempted-1").exists()
    assert by_fast[3].status == "failed"
    assert "RuntimeError after 2 attempt(s): always broken" in by_fast[3].error
    assert by_fast[4].status == "failed" and "Worker" in by_fast[4].error
    assert hung.status == "timeout" and "cancelled after 2 s" in hung.error


def test_optuna_walk_forward_inline(tmp_path: Path) -> None:
    """Optuna searches windows 0 and 1 (3 trials each, seeded); each fold's best runs once more
    on the next window; the last window is only ever out of sample."""
    from ops.sweep import prepare
    from ops.sweep_exec import InlineExecutor
    from ops.sweep_search import run_search

    path = write_config(
        tmp_path,
        'method = "optuna"\ntrials = 3\nwindows = 3\nwindow_events = 300\n'
        "[sweep.params]\nfast = { low = 2, high = 6 }\nslow = [12, 16]",
    )
    cfg = parse_config(path.read_text(), path)
    windows, make_spec = prepare(cfg, path.read_text())
    out = run_search(cfg, windows, make_spec, InlineExecutor())
    search = [t for t in out.trials if t.role == "search"]
    oos = [t for t in out.trials if t.role == "oos"]
    assert sorted(t.window for t in search) == [0, 0, 0, 1, 1, 1]
    assert [(t.window, t.fold) for t in oos] == [(1, 0), (2, 1)]
    for f in out.folds:
        assert f.oos_trial is not None and f.oos_trial.params == f.is_trial.params
        assert f.is_trial.window == f.fold and f.oos_trial.window == f.fold + 1
    assert all(2 <= t.params["fast"] <= 6 and isinstance(t.params["fast"], int) for t in search)
    assert all(t.ok and t.metrics["ticks"] == 300 for t in out.trials)
    # the only strategy: its own P&L is the portfolio's
    assert all(t.metrics["strategy_net_pnl"] == pytest.approx(t.metrics["net_pnl"]) for t in oos)


def test_windows_points_and_strategy() -> None:
    from ops.sweep_windows import SweepError, grid_points, make_windows, parse_time_ns

    assert grid_points({"b": [1, 2], "a": {"low": 0.5, "high": 1.0, "step": 0.25}}) == [
        {"a": 0.5, "b": 1}, {"a": 0.5, "b": 2}, {"a": 0.75, "b": 1}, {"a": 0.75, "b": 2},
        {"a": 1.0, "b": 1}, {"a": 1.0, "b": 2},
    ]  # fmt: skip
    assert grid_points({"n": {"low": 1, "high": 7, "step": 3}}) == [{"n": 1}, {"n": 4}, {"n": 7}]
    assert parse_time_ns("2024-01-02T00:00:00", "k") == 1_704_153_600 * 10**9
    assert parse_time_ns("1704153600000000000", "k") == 1_704_153_600 * 10**9
    base = TINY.format(var="/tmp/x", pg="off", sweep="windows = 3")
    syn = make_windows(parse_config(base))
    assert [(w.seed, w.events) for w in syn] == [(11, 500), (12, 500), (13, 500)]
    csv = Path(__file__).with_name("test_sweep.py")  # any existing file: the time cut is tested
    rep = base.replace('source = "synthetic"', f'source = "replay"\nreplay_quotes = "{csv}"')
    with pytest.raises(SweepError, match="sweep.start"):
        make_windows(parse_config(rep))
    rep = rep.replace("windows = 3", 'windows = 2\nstart = "2024-01-02"\nend = "2024-01-03"')
    a, b = make_windows(parse_config(rep))  # a bare date as the end: through that day
    assert a.end_ns == b.start_ns and b.end_ns - a.start_ns == 2 * 86_400 * 10**9
    assert (a.seed, a.start_ns) == (None, 1_704_153_600 * 10**9)
    a, b = make_windows(parse_config(rep.replace('"2024-01-03"', '"2024-01-03T00:00:00"')))
    assert b.end_ns - a.start_ns == 86_400 * 10**9


def test_time_window_cuts_the_replay(tmp_path: Path) -> None:
    """A quote replay cut to [start, end): only the quotes inside it reach the backtest."""
    from ops.sweep_trial import run_trial, trial_tables

    rows = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    rows += [f"{(10 + k) * 10**9},AAPL,190.00,5,190.02,5" for k in range(20)]
    quotes = tmp_path / "q.csv"
    quotes.write_text("\n".join(rows) + "\n")
    cfg = write_config(tmp_path, "").read_text()
    cfg = cfg.replace('source = "synthetic"', f'source = "replay"\nreplay_quotes = "{quotes}"')
    w = Window(0, "t", start_ns=13 * 10**9, end_ns=18 * 10**9)
    spec = TrialSpec(1, w, {}, "search", None, trial_tables(cfg), str(tmp_path / "c.toml"), "", 0)
    assert "storage" not in spec.config and "market" in spec.config  # no DSN travels
    r = run_trial(spec)
    assert r.ok, r.error
    assert r.metrics["ticks"] == 5


def test_sweep_config_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ops.cli import main

    def bad(sweep: str) -> str:
        with pytest.raises(ConfigError) as exc:
            parse_config(TINY.format(var="/tmp/x", pg="off", sweep=sweep))
        return exc.value.key

    assert bad('method = "random"') == "sweep.method"
    assert bad("cscv_blocks = 3") == "sweep.cscv_blocks"
    assert bad("[sweep.params]\nfast = { low = 1, high = 5 }") == "sweep.params.fast"  # grid: step
    assert bad("windows = 1") == "sweep.walk_forward"
    assert bad("[sweep.params]\nfast = []") == "sweep.params.fast"
    # a parameter the strategy does not have stops the sweep before any trial (exit 2)
    cfg = write_config(tmp_path, "[sweep.params]\nfsat = [1, 2]")
    assert main(["sweep", "--config", str(cfg), "--inline", "--no-store"]) == 2
    cfg = write_config(tmp_path, "")
    assert main(["sweep", "--config", str(cfg), "--inline", "--no-store"]) == 2  # no params
    cfg = write_config(tmp_path, "[sweep.params]\nfast = [2]")
    assert main(["sweep", "--config", str(cfg), "--trials", "0"]) == 2  # options checked too
    assert "sweep.trials: must be >= 1" in capsys.readouterr().err


def test_catalog_windows_cut_the_catalog(tmp_path: Path) -> None:
    """A catalog swept in two windows: each trial reads its half of the quotes (pushed down as
    catalog_start / catalog_end), none lost or read twice."""
    from ops.cli import main
    from ops.sweep import prepare
    from ops.sweep_exec import InlineExecutor
    from ops.sweep_search import run_search

    t0 = 1_700_000_000_000_000_000
    rows = ["ts_event,symbol,bid_px,bid_qty,ask_px,ask_qty"]
    rows += [f"{t0 + k * 10**8},AAPL,190.{k % 50:02d},5,190.{k % 50 + 2:02d},5" for k in range(300)]
    (tmp_path / "q.csv").write_text("\n".join(rows) + "\n")
    base = write_config(tmp_path, "")
    cat = tmp_path / "cat"
    imp = ["data", "import", "quotes", str(tmp_path / "q.csv"), "--config", str(base)]
    assert main([*imp, "--catalog", str(cat), "--venue", "sim"]) == 0
    sweep = f'windows = 2\nstart = "{t0}"\nend = "{t0 + 30 * 10**9}"\n[sweep.params]\nfast = [2]'
    text = write_config(tmp_path, sweep).read_text()
    text = text.replace(
        'source = "synthetic"', f'source = "catalog"\ncatalog_dir = "{cat}"\ncatalog_venue = "sim"'
    )
    path = tmp_path / "cat.toml"
    path.write_text(text)
    cfg = parse_config(text, path)
    windows, make_spec = prepare(cfg, text)
    out = run_search(cfg, windows, make_spec, InlineExecutor())
    assert [t.status for t in out.trials] == ["ok", "ok"], [t.error for t in out.trials]
    assert [t.metrics["ticks"] for t in out.trials] == [150, 150]


def test_driver_state_puts_back_what_ray_init_leaves() -> None:
    import signal

    from ops.sweep_exec import DriverState

    before = DriverState()
    os.environ["RAY_SWEEP_TEST"] = "1"
    os.environ["PYTHONBREAKPOINT"] = "ray.util.rpdb._driver_set_trace"
    signal.signal(signal.SIGTERM, lambda *_: None)
    before.restore()
    assert "RAY_SWEEP_TEST" not in os.environ
    assert os.environ.get("PYTHONBREAKPOINT") == before.env.get("PYTHONBREAKPOINT")
    assert signal.getsignal(signal.SIGTERM) == before.sigterm
