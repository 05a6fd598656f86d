"""`gekko run --venue <kind>`, a real process, paper, against a local exchange server.

The run loads the venue's markets in its pre-flight (over ccxt, from the local server), trades
paper on the venue's live market data (a TWAP of market orders matched by the simulated exchange
against the venue's book), and ends with positions consistent with its fills. API keys in the
environment are used (the account's fee tier) and appear nowhere the run writes: logs,
summaries, journals, the Redis and PostgreSQL files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_preflight import GEKKO, set_key
from tests.test_venue_wiring import local_server, venue_toml

BASE = (ROOT / "config.toml").read_text()
TWAP = """
[[strategies]]
id = 1
path = "engine.strategies.scheduled:ScheduledExecution"
instruments = ["{symbol}"]
[strategies.params]
algo = "twap"
side = "buy"
qty = {qty}
[strategies.params.algo_params]
duration_s = 2
slices = 4
"""


def run_config(tmp_path: Path, venue: str, storage: bool, symbol: str, qty: int) -> Path:
    """config.toml with a unique engine id, a tmp var dir, no inference, one TWAP strategy on
    ``symbol`` and ``venue`` (a [[venues]] entry) appended."""
    eid = "vw" + uuid.uuid4().hex[:8]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    # lots of a satoshi (Coinbase, Kraken): a position of 0.02 BTC is 2,000,000 lots
    text = set_key(text, "risk", "max_position_lots = 100000000")
    if not storage:
        text = set_key(text, "storage.postgres", 'mode = "off"')
    else:  # and Redis: the bridge publishes the events and the latest state there
        text = set_key(text, "bridge", "enabled = true")
    text = text[: text.index("[[strategies]]")]  # the shipped strategies trade the simulator's
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text + TWAP.format(symbol=symbol, qty=qty) + venue)
    return cfg


def gekko_env(*args: str, cwd: Path, env: dict[str, str], timeout: float = 100) -> Any:
    cmd = [str(GEKKO)] if GEKKO.exists() else [sys.executable, "-m", "ops.cli"]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=os.environ | env,
    )


def _signed_fills(var: Path) -> dict[int, int]:
    net: dict[int, int] = {}
    for line in (var / "last_run" / "fills.jsonl").read_text().splitlines():
        f = json.loads(line)
        side = 1 if f["side"] == 1 else -1  # engine.messages.Side.BUY
        net[f["instrument_id"]] = net.get(f["instrument_id"], 0) + side * f["fill_qty"]
    return net


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("kind", "symbol", "qty"),
    [("coinbase", "BTC/USD", 2_000_000), ("kraken", "BTC/USD", 2_000_000)],
)
def test_paper_run_on_each_venue_trades_with_positions_from_its_fills(
    tmp_path: Path, kind: str, symbol: str, qty: int
) -> None:
    """`gekko run --venue <kind>` with no [[venues]] entry but its URLs: paper on the venue's
    market data, a TWAP of market orders filled against its book, positions = fills."""
    pytest.importorskip("engine.venues.ccxt_data", reason="the ccxt market-data client")
    server = local_server(kind)
    try:
        cfg = run_config(tmp_path, venue_toml(kind, server), False, symbol, qty)
        r = gekko_env(
            "run", "--config", str(cfg), "--venue", kind, "--duration", "5", "--quiet",
            cwd=tmp_path, env={},
        )  # fmt: skip
    finally:
        server.stop()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[0].startswith(f"PAPER trading on {kind}")
    var = tmp_path / "var"
    summary = json.loads((var / "last_run" / "summary.json").read_text())
    (pos,) = summary["positions"].values()
    assert pos["position"] == qty and summary["fills"] >= 4
    assert _signed_fills(var) == {pos["instrument_id"]: qty} and summary.get("consistent")


@pytest.mark.timeout(120)
def test_paper_run_on_binanceus_trades_and_keeps_keys_out_of_everything(tmp_path: Path) -> None:
    pytest.importorskip("engine.venues.ccxt_data", reason="the ccxt market-data client")
    key, secret = "k" + uuid.uuid4().hex * 2, "s" + uuid.uuid4().hex * 2
    server = local_server("binanceus")
    try:
        server.add_key(key, secret, balances={"USDT": "100000"})
        venue = venue_toml("binanceus", server)
        cfg = run_config(tmp_path, venue, storage=True, symbol="BTC/USDT", qty=1000)
        env_keys = {"GEKKO_BINANCEUS_API_KEY": key, "GEKKO_BINANCEUS_API_SECRET": secret}
        r = gekko_env(
            "run", "--config", str(cfg), "--venue", "binanceus", "--duration", "5", "--quiet",
            cwd=tmp_path, env=env_keys,
        )  # fmt: skip
        fee_calls = sum(n for k, n in server.requests.items() if "/sapi/v1/asset/" in k)
    finally:
        server.stop()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.splitlines()[0].startswith("PAPER trading on binanceus")
    var = tmp_path / "var"
    summary = json.loads((var / "last_run" / "summary.json").read_text())
    (pos,) = summary["positions"].values()
    assert pos["position"] == 1000 and summary["fills"] >= 4  # the TWAP's children, filled
    assert _signed_fills(var) == {pos["instrument_id"]: 1000}
    assert pos["fees"] > 0  # the venue's fee schedule, charged by the simulated exchange
    assert summary.get("consistent", True) and "failure" not in summary
    assert fee_calls >= 1  # the keys were used: the account's fee tier was asked for
    leaked = [
        str(p)
        for p in var.rglob("*")
        if p.is_file() and (key.encode() in p.read_bytes() or secret.encode() in p.read_bytes())
    ]
    assert leaked == []
    assert key not in r.stdout + r.stderr and secret not in r.stdout + r.stderr
    stores = {p.relative_to(var).parts[0] for p in var.rglob("*") if p.is_file()}
    assert {"pg", "redis", "journal", "last_run"} <= stores  # what was searched


@pytest.mark.timeout(120)
def test_live_run_on_binanceus_says_live_first_and_its_orders_reach_the_venue(
    tmp_path: Path,
) -> None:
    """All three gates: the first line says LIVE with the venue's name; the TWAP's orders go
    to the (local) venue signed with the keys, fill there, and the run's positions agree."""
    pytest.importorskip("engine.venues.ccxt_exec", reason="the ccxt execution client")
    key, secret = "k" + uuid.uuid4().hex * 2, "s" + uuid.uuid4().hex * 2
    server = local_server("binanceus")
    try:
        server.add_key(key, secret, balances={"USDT": "100000"})
        venue = venue_toml("binanceus", server, "live = true\n")
        cfg = run_config(tmp_path, venue, storage=False, symbol="BTC/USDT", qty=1000)
        env_keys = {"GEKKO_BINANCEUS_API_KEY": key, "GEKKO_BINANCEUS_API_SECRET": secret}
        r = gekko_env(
            "run", "--config", str(cfg), "--venue", "binanceus", "--live", "--duration", "6",
            "--quiet", cwd=tmp_path, env=env_keys,
        )  # fmt: skip
        orders_at_venue = sum(n for k, n in server.requests.items() if k.endswith("/order"))
    finally:
        server.stop()
    assert r.stdout.splitlines()[0] == "LIVE trading on binanceus: real orders with real money"
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    summary = json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())
    (pos,) = summary["positions"].values()
    # Binance charges a buy's fee in the asset bought (0.1 % of 1000 lots = 1 lot): the
    # position is what the account holds, not what was ordered
    assert pos["position"] == 999 and orders_at_venue >= 4
    assert summary.get("consistent") and "failure" not in summary
    leaked = [
        str(p)
        for p in (tmp_path / "var").rglob("*")
        if p.is_file() and (key.encode() in p.read_bytes() or secret.encode() in p.read_bytes())
    ]
    assert leaked == [] and key not in r.stdout + r.stderr and secret not in r.stdout + r.stderr
