"""Configuration errors found before anything starts (ops/preflight.py, issue 11 item 7).

Each broken config is run the way a user runs it — the ``gekko`` script as a subprocess — and
must exit 2 with a message naming the file and the key, print no traceback, and (``gekko run``)
start nothing: no PostgreSQL data directory, no run record, no shared-memory region.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ops.config import ConfigError, load_config
from ops.preflight import check_cpus, check_strategies
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(180)

GEKKO = Path(sys.executable).parent / "gekko"  # the console script a user runs


def gekko(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    cmd = [str(GEKKO)] if GEKKO.exists() else [sys.executable, "-m", "ops.cli"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def set_key(text: str, section: str, line: str) -> str:
    """Replace ``key = ...`` inside ``[section]`` with ``line`` (or add it to the section)."""
    key = line.split("=")[0].strip()
    start = text.index(f"[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    at = text.find(f"\n{key} = ", start, end)
    if at < 0:
        return text[: start + len(section) + 3] + line + "\n" + text[start + len(section) + 3 :]
    nl = text.index("\n", at + 1)
    return text[: at + 1] + line + text[nl:]


def write_config(tmp_path: Path, edits: list[tuple[str, str]] = (), strategies: str = "") -> Path:
    """config.toml with a private engine id and var dir, ``edits`` ((section, line)) applied."""
    eid = "p" + uuid.uuid4().hex[:7]
    text = (ROOT / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"', 1)  # side by side
    text = set_key(text, "engine", f'var_dir = "{tmp_path / "var"}"')
    for section, line in edits:
        text = set_key(text, section, line)
    if strategies:
        text = text[: text.index("[[strategies]]")] + strategies
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def started_nothing(tmp_path: Path, cfg: Path) -> bool:
    eid = load_config(cfg).engine.id
    var = tmp_path / "var"
    shm = [p.name for p in Path("/dev/shm").iterdir() if eid in p.name]
    return not (var / "pg").exists() and not (var / "last_run").exists() and not shm


# (command, config edits, strategies table, extra args, what stderr must name)
CASES = {
    "misspelt_param": (
        "run",
        [("strategies.params", "half_spread_tick = 2")],
        "",
        [],
        "[[strategies]] id=1 params.half_spread_tick: unknown parameter; "
        "did you mean 'half_spread_ticks'?",
    ),
    "wrong_type": (
        "backtest",
        [("strategies.params", 'half_spread_ticks = "2"')],
        "",
        [],
        "[[strategies]] id=1 params.half_spread_ticks: expected float, got str",
    ),
    "range": (
        "run",
        [],
        '[[strategies]]\nid = 4\npath = "engine.strategies.momentum:MomentumTaker"\n'
        "[strategies.params]\nfast = 50\nslow = 10\n",
        [],
        "[[strategies]] id=4 params.fast: need 1 <= fast < slow",
    ),
    "no_import": (
        "run",
        [],
        '[[strategies]]\nid = 3\npath = "nosuch_pkg.mod:Thing"\n',
        [],
        "[[strategies]] id=3 path: strategy path 'nosuch_pkg.mod:Thing': cannot import",
    ),
    "replay_format": (
        "run",
        [("market", 'source = "replay"'), ("market", 'replay_quotes = "QUOTES"')],
        "",
        [],
        "market.replay_quotes: ",
    ),
    "replay_format_backtest": (
        "backtest",
        [("market", 'source = "replay"'), ("market", 'replay_quotes = "QUOTES"')],
        "",
        [],
        "missing required column 'ts_event'",
    ),
    "var_dir": ("run", [("engine", 'var_dir = "AFILE/var"')], "", [], "engine.var_dir: "),
    "journal_dir": (
        "run",
        [("storage.postgres", 'journal_dir = "AFILE/journal"')],
        "",
        [],
        "storage.postgres.journal_dir: ",
    ),
    "cpus": ("run", [("processes.risk", "cpus = [4099]")], "", [], "processes.risk.cpus: CPU 4099"),
    "events": ("backtest", [], "", ["--events", "-1"], "argument --events: must be >= 0"),
    "duration": ("run", [], "", ["--duration", "-1"], "argument --duration: must be > 0"),
    "json_dir": ("backtest", [], "", ["--json", "/nonexistent-dir/s.json"], "no such directory"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_error_exits_2_before_anything_starts(tmp_path: Path, case: str) -> None:
    command, edits, strategies, args, expected = CASES[case]
    quotes = tmp_path / "quotes.csv"  # a LOBSTER message row where a quotes CSV belongs
    quotes.write_text("34200.01,1,123,100,1180000,1\n")
    afile = tmp_path / "afile"
    afile.write_text("")
    edits = [
        (s, line.replace("QUOTES", str(quotes)).replace("AFILE", str(afile))) for s, line in edits
    ]
    cfg = write_config(tmp_path, edits, strategies)
    extra = ["--duration", "30"] if command == "run" and not args else []
    r = gekko(command, "--config", str(cfg), *extra, *args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert expected in r.stderr, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    if not args:  # a config error names the file
        assert str(cfg) in r.stderr
    assert started_nothing(tmp_path, cfg)


def test_pin_strict_false_turns_missing_cpus_into_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edits = [("processes.feed", "cpus = [0, 4099]")]
    with pytest.raises(ConfigError, match=r"processes\.feed\.cpus: CPU 4099 not available"):
        check_cpus(load_config(write_config(tmp_path, edits)))
    cfg = load_config(write_config(tmp_path, [*edits, ("supervisor", "pin_strict = false")]))
    with caplog.at_level(logging.WARNING, logger="gekko.preflight"):
        check_cpus(cfg)
    assert "processes.feed.cpus: CPU 4099 not available" in caplog.text


def test_shipped_config_passes_and_undeclared_params_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    check_strategies(load_config(ROOT / "config.toml"))  # every shipped strategy builds
    (tmp_path / "loose_strategy.py").write_text(
        "from engine.strategies.base import Strategy\n\nclass Loose(Strategy):\n    pass\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        strategies = '[[strategies]]\npath = "loose_strategy:Loose"\n[strategies.params]\nx = 1\n'
        with caplog.at_level(logging.WARNING, logger="gekko.preflight"):
            check_strategies(load_config(write_config(tmp_path, strategies=strategies)))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("loose_strategy", None)
    assert "Loose declares no Params struct" in caplog.text


CWD_STRATEGY = '''
from engine.strategies.base import Strategy
from engine.strategies.params import StrategyParams


class BuyOnceParams(StrategyParams):
    size: int = 1


class BuyOnce(Strategy):
    """Buys ``size`` lots at the market on its first quote."""

    Params = BuyOnceParams

    def on_quote(self, q):
        if not self.ctx.open_orders and self.ctx.position(q.instrument_id) == 0:
            self.ctx.buy(q.instrument_id, self.p.size)
'''


def test_strategy_module_in_the_working_directory_imports_in_backtest_and_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "cwd_strategy.py").write_text(CWD_STRATEGY)
    strategies = (
        '[[strategies]]\nid = 1\npath = "cwd_strategy:BuyOnce"\ninstruments = ["AAPL"]\n'
        "[strategies.params]\nsize = 3\n"
    )
    edits = [("storage.postgres", 'mode = "off"'), ("inference", "enabled = false")]
    cfg = write_config(tmp_path, edits, strategies)
    r = gekko("backtest", "--config", str(cfg), "--events", "2000", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BuyOnce" in r.stdout
    r = gekko("run", "--config", str(cfg), "--duration", "3", "--quiet", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    import json

    summary = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    assert summary["orders_new"] >= 1
