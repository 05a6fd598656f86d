"""`gekko run --venue polymarket`, paper and live, as real processes against the local CLOB.

Paper: the pre-flight lists the CLOB's markets as binary instruments, a TWAP of limit children
buys YES shares through the simulated exchange on the venue's book, and the venue never sees an
order. Live (keystore entry with ``allow_withdraw``: a wallet key holds its funds): the same
TWAP's children reach the CLOB signed by the wallet, the market resolves YES during the run and
the run ends flat with the resolution's P&L, computed by hand, and the key nowhere it wrote.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from tests.test_preflight import set_key
from tests.venue_e2e import BASE, engine, engine_position, expect, stop, summary
from tests.venues.polymarket import PolymarketServer

pytestmark = pytest.mark.timeout(180)

SYMBOL = "will-it-rain-in-lisbon-YES/USDC"
# two children of 10 shares, each a limit 2 ticks through the ask (0.52): they take it
TWAP = f"""
[[strategies]]
id = 1
path = "engine.strategies.scheduled:ScheduledExecution"
instruments = ["{SYMBOL}"]
[strategies.params]
algo = "twap"
side = "buy"
qty = 2000
limit_ticks = 2
[strategies.params.algo_params]
duration_s = 1.0
slices = 2
"""


def _config(tmp_path: Path, srv: PolymarketServer, live: bool, extra: str = "") -> Path:
    eid = "pm" + uuid.uuid4().hex[:8]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    text = set_key(text, "storage.postgres", 'mode = "off"')
    text = text[: text.index("[[strategies]]")] + extra + TWAP
    text += (
        f'\n[[venues]]\nname = "polymarket"\nkind = "polymarket"\nlive = {str(live).lower()}\n'
        f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\nrest_poll_s = 0.2\n'
        f'symbols = ["{SYMBOL}"]\n'
    )
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text)
    return cfg


def _cmd(cfg: Path, *args: str) -> list[str]:
    run = [sys.executable, "-m", "ops.cli", "run", "--config", str(cfg)]
    return [*run, "--venue", "polymarket", *args]


def _ours(srv: PolymarketServer, address: str) -> list[Any]:
    return [o for o in srv.matcher.orders.values() if o.account == address.lower()]


def test_paper_run_buys_on_the_clobs_book_settles_its_resolution_and_sends_it_nothing(
    tmp_path: Path,
) -> None:
    """Paper: 20 YES bought at 0.52 on the CLOB's book through the simulated exchange; the
    market resolves YES on the venue and the paper position settles at 1: realized +9.60."""
    with PolymarketServer() as srv:
        cfg = _config(tmp_path, srv, live=False)
        eid = _engine_id(cfg)
        with engine(_cmd(cfg, "--duration", "60", "--quiet"), dict(os.environ)) as proc:
            expect(lambda: engine_position(eid) == 2000, 45, proc, "the paper TWAP filled")
            cid = next(m.condition_id for m in srv.markets.values() if m.slug in SYMBOL)
            srv.call(srv.resolve, cid, "Yes")
            expect(lambda: engine_position(eid) == 0, 15, proc, "the paper position settled")
            out, err = stop(proc)
        assert proc.returncode == 0, err[-4000:]
        assert "PAPER" in out + err
        pos = summary(tmp_path)["positions"][SYMBOL]
        assert pos["position"] == pos["position_from_fills"] == 0
        assert pos["realized"] == pytest.approx(9.60), json.dumps(pos)
        assert srv.requests.get("POST /order", 0) == 0 and not srv.api_keys  # no key, no order
        assert srv.requests["GET /markets"] >= 1  # the pre-flight listed its markets


def _engine_id(cfg: Path) -> str:
    import tomllib

    return str(tomllib.loads(cfg.read_text())["engine"]["id"])


def _keystore(tmp_path: Path, address: str, pk: str) -> str:
    from ops import keystore as ks

    passphrase = "pm passphrase " + uuid.uuid4().hex
    pw = tmp_path / "keystore.pass"
    pw.write_text(passphrase + "\n")
    pw.chmod(0o600)
    path = tmp_path / "keys.json"
    entry = ks.KeyEntry(
        name="polymarket-main",
        venue="polymarket",
        api_key=address,
        api_secret=pk,
        allow_withdraw=True,  # the wallet key holds the funds: it can always withdraw
        created=ks.now(),
    )
    ks.save(
        path, passphrase, [entry], ks.KdfParams(iterations=2, lanes=1, memory_kib=ks.MIN_MEMORY_KIB)
    )
    return f'\n[keystore]\npath = "{path}"\npassphrase_file = "{pw}"\n\n'


def test_live_run_signs_orders_and_settles_a_resolution_by_hand(tmp_path: Path) -> None:
    """Hand-computed: 20 YES bought at 0.52 (the ask: -10.40); the market resolves YES: +20.00.
    The run ends flat, realized +9.60; the venue holds 10 009.60 USDC for the wallet."""
    acct = Account.create()
    pk, address = acct.key.hex(), acct.address
    with PolymarketServer() as srv:
        keystore = _keystore(tmp_path, address, pk)
        cfg = _config(tmp_path, srv, live=True, extra=keystore)
        cfg.write_text(cfg.read_text() + 'keystore_entry = "polymarket-main"\n')
        with engine(_cmd(cfg, "--live", "--duration", "60", "--quiet"), dict(os.environ)) as proc:

            def bought() -> bool:
                mine = _ours(srv, address)
                return sum((o.filled for o in mine), Decimal(0)) == 20 and not any(
                    o.is_open for o in mine
                )

            expect(bought, 45, proc, "the TWAP's two children filled at the venue")
            cid = next(m.condition_id for m in srv.markets.values() if m.slug in SYMBOL)
            srv.call(srv.resolve, cid, "Yes")
            usdc = srv.matcher.accounts[address.lower()]
            expect(lambda: usdc.free["USDC"] == Decimal("10009.60"), 10, proc, "paid out")
            eid = _engine_id(cfg)
            # and exec has seen the resolution (a poll of the venue later): settled, flat
            expect(lambda: engine_position(eid) == 0, 15, proc, "the live position settled")
            out, err = stop(proc)
        assert proc.returncode == 0, err[-4000:]
        assert "LIVE" in (out + err)
        assert srv.signature_failures == 0 and srv.auth_failures == 0
        assert len(_ours(srv, address)) == 2 and all(o.filled == 10 for o in _ours(srv, address))
        s = summary(tmp_path)
        pos = s["positions"][SYMBOL]
        assert pos["position"] == 0
        assert pos["realized"] == pytest.approx(9.60), json.dumps(pos)
        leaked = [
            str(p)
            for p in (tmp_path / "var").rglob("*")
            if p.is_file() and pk.removeprefix("0x").encode() in p.read_bytes()
        ]
        assert leaked == []
