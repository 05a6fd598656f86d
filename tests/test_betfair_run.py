"""`gekko run --venue betfair`, paper and live, as real processes against the local Betfair.

Both runs trade ``engine.strategies.green_up:GreenUp`` on Arsenal (1.200000001/47972): back
20.00 at the best odds available to back (2.00), and when the odds shorten (the test puts
backers at 1.60 on the venue: the best lay odds fall to 1.60) cash out with the lay that evens
the two outcomes: 20 x 2.00 / 1.60 = 25.00 at 1.60. By hand: Arsenal wins: +20.00 - 25 x 0.60 =
+5.00; Arsenal loses: -20.00 + 25.00 = +5.00. The market settles (Arsenal wins); commission 5 %
of the market's net winnings 5.00 = 0.25, so realized +5.00 and +4.75 after commission. Settled
is flat: the selection's position is 0 after the settlement everywhere (the record, exec's table,
the summary), its money in the realized P&L; the bets stay in the fills.

Paper: the bets are matched by the simulated exchange on the venue's ladders and the venue sees
none (its session is used for market data: Betfair shows nothing without one). Live: both bets
reach the venue (placeOrders), the venue's account ends 1000 + 5.00 - 0.25.
"""

from __future__ import annotations

import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.test_preflight import set_key
from tests.venue_e2e import BASE, engine, engine_position, expect, stop, summary
from tests.venues.betfair import USERNAME, BetfairServer, venue_extra

pytestmark = pytest.mark.timeout(180)

SYMBOL = "1.200000001/47972"
MID, ARSENAL = "1.200000001", 47972
GREEN_UP = f"""
[[strategies]]
id = 1
path = "engine.strategies.green_up:GreenUp"
instruments = ["{SYMBOL}"]
[strategies.params]
stake = 2000
cash_out_at = 1.60
"""


def _config(tmp_path: Path, srv: BetfairServer, live: bool) -> tuple[Path, str]:
    eid = "bf" + uuid.uuid4().hex[:8]
    text = BASE.replace('id = "gekko"', f'id = "{eid}"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "inference", "enabled = false")
    text = set_key(text, "storage.postgres", 'mode = "off"')
    text = set_key(text, "risk", "flash_band_pct = 50.0")  # odds shorten 2.00 -> 1.60 at once
    text = text[: text.index("[[strategies]]")] + GREEN_UP
    text += (
        f'\n[[venues]]\nname = "betfair"\nkind = "betfair"\nlive = {str(live).lower()}\n'
        f'rest_url = "{srv.rest_url}"\n{venue_extra(srv, tmp_path, (SYMBOL,))}'
    )
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text)
    return cfg, eid


def _cmd(cfg: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ops.cli",
        "run",
        "--config",
        str(cfg),
        "--venue",
        "betfair",
    ] + list(args)


def _realized(eid: str) -> float | None:
    """The realized P&L exec has published in shared memory (None: no table yet)."""
    from procs.runtime import POSITION_DTYPE
    from shm.seqlock import SeqlockTable

    try:
        table = SeqlockTable.attach(eid, "positions", POSITION_DTYPE)
    except Exception:
        return None
    try:
        return float(sum(float(r["realized"]) for r in table.read_all()))
    finally:
        table.close()


def _ours(srv: BetfairServer) -> list:
    return [b for b in srv.ex.bets.values() if b.account is not None]


def _shorten(srv: BetfairServer) -> None:
    """Arsenal's odds shorten: the house's offers go, layers now offer 1.58 (the best odds to
    back) and backers 1.60 (the best odds to lay)."""
    srv.call(_reprice, srv)


def _reprice(srv: BetfairServer) -> None:
    sel = srv.ex.markets[MID].selections[ARSENAL]
    for b in [*sel.backs, *sel.lays]:
        if b.account is None:
            srv.ex.cancel(b.bet_id)
    srv.ex.place(MID, ARSENAL, "LAY", Decimal("1.58"), Decimal(100), None)
    srv.ex.place(MID, ARSENAL, "BACK", Decimal("1.60"), Decimal(100), None)
    srv.stream.market_changed(MID)


@pytest.mark.parametrize("live", [False, True], ids=["paper", "live"])
def test_a_green_up_run_backs_cashes_out_and_settles_by_hand(tmp_path: Path, live: bool) -> None:
    with BetfairServer() as srv:
        cfg, eid = _config(tmp_path, srv, live=live)
        args = ["--live"] if live else []
        with engine(_cmd(cfg, *args, "--duration", "60", "--quiet"), dict(os.environ)) as proc:
            expect(lambda: engine_position(eid) == 2000, 60, proc, "backed 20.00")
            _shorten(srv)
            expect(lambda: engine_position(eid) == -500, 30, proc, "laid 25.00: greened up")
            srv.settle(MID, ARSENAL)
            # settled is flat: the position is 0, the settlement realizes its P&L
            expect(lambda: _realized(eid) == pytest.approx(5.00), 30, proc, "settled")
            expect(lambda: engine_position(eid) == 0, 30, proc, "flat after the settlement")
            out, err = stop(proc)
        assert proc.returncode == 0, err[-4000:]
        s = summary(tmp_path)
        pos = s["positions"][SYMBOL]
        assert pos["position"] == pos["position_from_fills"] == 0, pos
        assert pos["realized"] == pytest.approx(5.00), pos
        assert s["commission"] == pytest.approx(0.25)  # 5 % of the market's net 5.00
        assert s["pnl_by_strategy"]["1"]["net"] == pytest.approx(4.75)
        if live:
            assert "LIVE" in out + err
            bets = sorted(_ours(srv), key=lambda b: b.side)
            assert [(b.side, b.matched, b.avg_price) for b in bets] == [
                ("BACK", Decimal(20), Decimal("2.00")),
                ("LAY", Decimal(25), Decimal("1.60")),
            ]
            assert srv.ex.balance[USERNAME] == Decimal("1004.75")
        else:
            assert srv.requests.count("placeOrders") == 0 and _ours(srv) == []
            assert srv.requests.count("listMarketCatalogue") >= 1
