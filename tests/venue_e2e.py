"""Shared pieces of the real-process venue tests (tests/test_venue_e2e*.py): a local exchange
server run as a process (``python -m tests.venues``), a `gekko run` config pointed at it, and the
checks that compare what the engine ended with against what the server holds.

Why a process and not the in-test server thread: the engine's workers are processes too, and a
SIGKILLed exec or a reconnect storm must meet a venue that lives on without the test's help; the
server's own view (orders by client id, balances, faults fired) comes over its control routes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.test_preflight import set_key
from tests.venues import binance_capture

# any free port for the exporter: engines of tests running side by side never share one
BASE = (
    (ROOT / "config.toml")
    .read_text()
    .replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"', 1)
)


def _hex_keys() -> tuple[str, str]:
    return "k" + uuid.uuid4().hex * 2, "s" + uuid.uuid4().hex * 2


def _coinbase_keys() -> tuple[str, str]:
    from tests.venues.coinbase_auth import new_test_key

    name, pem, _ = new_test_key()
    return name, pem


def _kraken_keys() -> tuple[str, str]:
    from tests.venues.kraken_wire import new_test_key

    return new_test_key()


@dataclass(frozen=True)
class Venue:
    """One adapter under test: its kind, the symbol traded, its quote asset, a TWAP size in the
    venue's lots (about 0.01 BTC) and made-up keys of the form its server verifies."""

    kind: str
    symbol: str
    base: str
    quote: str
    qty: int
    lot: Decimal
    keys: Callable[[], tuple[str, str]]


VENUES = {
    "binanceus": Venue("binanceus", "BTC/USDT", "BTC", "USDT", 1000, Decimal("0.00001"), _hex_keys),
    "coinbase": Venue(
        "coinbase", "BTC/USD", "BTC", "USD", 1_000_000, Decimal("0.00000001"), _coinbase_keys
    ),
    "kraken": Venue(
        "kraken", "BTC/USD", "BTC", "USD", 1_000_000, Decimal("0.00000001"), _kraken_keys
    ),
}
#: Binance.US runs in `make test`; Coinbase and Kraken repeat the same real-process runs in
#: `make venues` (marker venue_matrix, to keep `make test` inside its time budget): their adapters'
#: own tests (tests/test_ccxt_*.py, tests/test_venue_conformance.py) run in `make test` too
KINDS = [k if k == "binanceus" else pytest.param(k, marks=pytest.mark.venue_matrix) for k in VENUES]


# --- the local exchange server, as a process --------------------------------------------------------
class ServerProcess:
    """``python -m tests.venues <kind>`` with one account (``key``) funded in the quote asset."""

    def __init__(self, v: Venue, key: str, secret: str, capture: bool = False) -> None:
        args = [sys.executable, "-m", "tests.venues", v.kind, "--port", "0"]
        if capture and v.kind == "binanceus" and binance_capture.available():
            args += ["--capture", str(binance_capture.CAPTURE_PATH), "--speed", "5"]
        # "--secret=..." : a Coinbase secret is a PEM, which starts with "-"
        args += ["--key", key, f"--secret={secret}", "--balance", f"{v.quote}=100000"]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.port = self._ready(60.0)
        self.rest_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def _ready(self, timeout_s: float) -> int:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout_s)
        line = got[0] if got else ""
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"the local server did not start: {line!r} {self.stderr()}")
        return int(line.split()[1])

    def _ctl(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.rest_url}/__control/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def state(self) -> dict[str, Any]:
        """The server's own view: accounts, orders by client id, order entries per client id."""
        return self._ctl("GET", "state")

    def fault(self, name: str, **args: Any) -> None:
        assert self._ctl("POST", "fault", {"name": name, **args})["ok"]

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        return (self.proc.stderr.read() if self.proc.stderr else "")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


@contextlib.contextmanager
def server(v: Venue, key: str, secret: str, capture: bool = False) -> Iterator[ServerProcess]:
    srv = ServerProcess(v, key, secret, capture)
    try:
        yield srv
    finally:
        srv.stop()


# --- the engine's config and process ----------------------------------------------------------------
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
duration_s = {duration_s}
slices = {slices}
"""


def write_config(
    tmp_path: Path,
    v: Venue,
    srv: ServerProcess,
    *,
    live: bool,
    slices: int = 4,
    duration_s: float = 2.0,
    venue_extra: str = "",
    storage: bool = False,
    config_extra: str = "",
) -> tuple[Path, str]:
    """config.toml with a unique engine id, a tmp var dir, no inference, PostgreSQL off (exec
    journals for recovery; ``storage``: PostgreSQL on and the Redis bridge too), one TWAP buy of
    ``v.qty`` and a ``[[venues]]`` entry of ``v.kind`` at ``srv``. Returns (path, engine id)."""
    eid = "ve" + uuid.uuid4().hex[:8]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    # the exporter on any free port (<var>/run/metrics-<eid>.addr): runs side by side never collide
    text = set_key(text, "metrics", 'listen = "127.0.0.1:0"')
    if storage:  # the bridge publishes the events and the latest state to Redis
        text = set_key(text, "bridge", "enabled = true")
        text = set_key(text, "bridge", 'mac_key = "made-up-bridge-key-venue-e2e-0123456"')
    else:
        text = set_key(text, "storage.postgres", 'mode = "off"')
    # a lot of 1e-8 BTC (Coinbase, Kraken): 0.01 BTC is a million lots
    text = set_key(text, "risk", "max_position_lots = 100000000")
    text = text[: text.index("[[strategies]]")]  # the shipped strategies trade the simulator's
    text += config_extra
    text += TWAP.format(symbol=v.symbol, qty=v.qty, duration_s=duration_s, slices=slices)
    text += (
        f'\n[[venues]]\nname = "{v.kind}"\nkind = "{v.kind}"\nlive = {str(live).lower()}\n'
        f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\n{venue_extra}'
    )
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text)
    return cfg, eid


def keystore_for(tmp_path: Path, v: Venue, key: str, secret: str) -> tuple[str, str, str]:
    """The keys in an encrypted keystore (ops/keystore.py) outside the run's var dir, its
    passphrase in a 0600 file: (the venue's ``keystore_entry`` line, the ``[keystore]``
    section, the passphrase, which must appear nowhere either)."""
    from ops import keystore as ks

    passphrase = "e2e passphrase " + uuid.uuid4().hex
    pw = tmp_path / "keystore.pass"
    pw.write_text(passphrase + "\n")
    pw.chmod(0o600)
    path = tmp_path / "keys.json"
    entry = ks.KeyEntry(
        name=f"{v.kind}-main", venue=v.kind, api_key=key, api_secret=secret, created=ks.now()
    )
    fast = ks.KdfParams(iterations=2, lanes=1, memory_kib=ks.MIN_MEMORY_KIB)
    ks.save(path, passphrase, [entry], fast)
    section = f'\n[keystore]\npath = "{path}"\npassphrase_file = "{pw}"\n\n'
    return f'keystore_entry = "{v.kind}-main"\n', section, passphrase


def key_env(v: Venue, key: str, secret: str) -> dict[str, str]:
    """The keys where ops/venue_keys.py looks for them: GEKKO_<NAME>_API_KEY / _API_SECRET."""
    name = v.kind.upper()
    return os.environ | {f"GEKKO_{name}_API_KEY": key, f"GEKKO_{name}_API_SECRET": secret}


def gekko_cmd(cfg: Path, v: Venue, *args: str) -> list[str]:
    return [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg), "--venue", v.kind, *args]


@contextlib.contextmanager
def engine(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`gekko run` in the background in its own session; killed (with its workers) if the
    block leaves it running."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def stop(proc: subprocess.Popen[str], timeout_s: float = 90) -> tuple[str, str]:
    """SIGTERM (a clean stop: the summary is written) and the run's (stdout, stderr)."""
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=timeout_s)


def wait_for(pred: Callable[[], bool], timeout_s: float, proc: Any = None) -> bool:
    """``pred`` becomes true within ``timeout_s`` (False at once if ``proc`` has exited)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


# --- what the run ended with vs what the venue holds ------------------------------------------------
def summary(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "var" / "last_run" / "summary.json").read_text())


def fills(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "var" / "last_run" / "fills.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def position(s: dict[str, Any], v: Venue) -> int:
    """The run's position in ``v.symbol`` (lots), checked against its own fills."""
    pos = s["positions"].get(v.symbol)
    assert pos is not None, s["positions"]
    assert pos["position"] == pos["position_from_fills"], pos
    return int(pos["position"])


def leaked_keys(tmp_path: Path, key: str, secret: str, *more: str) -> list[str]:
    """Files under the run's var dir (logs, summaries, reports, journals, Redis and PostgreSQL
    files) that hold the API key or secret (or any of ``more``: a keystore's passphrase)."""
    needles = [x.encode() for x in (key, secret, *more)]
    return [
        str(p)
        for p in (tmp_path / "var").rglob("*")
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    ]


def signed_fills(fs: list[dict[str, Any]]) -> int:
    return sum((1 if f["side"] in (1, "BUY") else -1) * f["fill_qty"] for f in fs)


def venue_orders(st: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in st["orders"] if o["account"] == "main"]


def base_balance(st: dict[str, Any], v: Venue) -> Decimal:
    b = st["accounts"]["main"].get(v.base, {"free": "0", "locked": "0"})
    return Decimal(b["free"]) + Decimal(b["locked"])


def assert_position_is_the_venue_balance(s: dict[str, Any], st: dict[str, Any], v: Venue) -> None:
    """The engine's position equals the base asset the venue holds for the account. A buy's fee
    taken in the base asset (Binance) is not ours: the engine counts each fill net of it, rounded
    down to whole lots, so less than one lot per order stays at the venue as dust, never more, and
    never less than the engine thinks it holds."""
    held = base_balance(st, v)
    ours = position(s, v) * v.lot
    filled = sum(1 for o in venue_orders(st) if Decimal(o["filled"]) > 0)
    assert ours <= held <= ours + filled * v.lot, (
        f"engine {ours} {v.base} vs venue {held} ({filled} orders filled)"
    )


def assert_each_order_sent_once(st: dict[str, Any]) -> None:
    """The server counts order entries by client id: each of ours arrived exactly once."""
    mine = {o["client_id"] for o in venue_orders(st)}
    assert mine, "no order reached the venue"
    entries = {cid: n for cid, n in st["submitted"].items() if cid in mine}
    assert entries and all(n == 1 for n in entries.values()), entries


def engine_position(eid: str) -> int | None:
    """The position exec has published in shared memory (one instrument traded), None while
    the table does not exist."""
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable

    try:
        table = SeqlockTable.attach(eid, "positions", POSITION_DTYPE)
    except Exception:
        return None
    try:
        return int(sum(int(r["position"]) for r in table.read_all()))
    finally:
        table.close()


def settled(
    srv: ServerProcess, eid: str, v: Venue, orders: int = 1, not_before: float = 0.0
) -> bool:
    """At least ``orders`` of ours reached the venue, none is still open there, and the position
    exec published is what the venue's balance says (within the fee's dust); never before
    ``not_before`` (``time.monotonic()``: when the algo's window is over, for a run whose
    faults may have cost it some of its children)."""
    if time.monotonic() < not_before:
        return False
    st = srv.state()
    mine = venue_orders(st)
    if len(mine) < orders or any(o["status"] == "open" for o in mine):
        return False
    pos = engine_position(eid)
    if pos is None:
        return False
    held, ours = base_balance(st, v), pos * v.lot
    filled = sum(1 for o in mine if Decimal(o["filled"]) > 0)
    return ours <= held <= ours + filled * v.lot


def expect(
    pred: Callable[[], bool],
    timeout_s: float,
    proc: Any,
    what: str,
    show: Callable[[], object] | None = None,
) -> None:
    """``wait_for``, or an AssertionError saying ``what`` did not happen, with the engine's
    stderr (a running engine is stopped for it)."""
    if wait_for(pred, timeout_s, proc):
        return
    seen = show() if show is not None else ""  # (``show``: what to print beside it)
    err = ""
    with contextlib.suppress(Exception):  # still running: stopped, for its log
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1] or ""
    raise AssertionError(
        f"{what}: not within {timeout_s} s (engine exit {proc.poll()})\n{seen}\n{err[-5000:]}"
    )
