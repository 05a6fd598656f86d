"""procs/recorder.py as a real process over real rings and a real PostgreSQL: every trading
record arrives exactly once — across a recorder SIGKILL and restart, and across a database
outage (journal, then replay) — and market data is recorded without gating the feed."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.messages import (
    Control,
    ControlCommand,
    NewOrder,
    OrderAccepted,
    OrderFilled,
    Quote,
    RiskEvent,
)
from ops.config import parse_config
from ops.store.migrate import migrate
from ops.store.pg import EmbeddedPostgres
from tests.conftest import ROOT, mp_context

pytestmark = pytest.mark.timeout(180)
RUN_ID = 777


def _config(tmp: Path, eid: str, dsn: str) -> Any:
    text = (ROOT / "config.toml").read_text()
    text = text.replace('id = "gekko"', f'id = "{eid}"').replace(
        'var_dir = "var"', f'var_dir = "{tmp / "var"}"'
    )
    start = text.index("[storage.postgres]")
    at = text.index('mode = "embedded"', start)
    text = text[:at] + f'mode = "{dsn}"' + text[at + len('mode = "embedded"') :]
    return parse_config(text, tmp / "config.toml"), text


def _recorder_main(cfg_text: str, path: str, eid: str, dsn: str, sup_pid: int) -> None:
    os.environ.update(GEKKO_PG_DSN=dsn, GEKKO_RUN_ID=str(RUN_ID), GEKKO_SUPERVISOR_PID=str(sup_pid))
    from ops.store.sink import install
    from procs import recorder

    install()
    cfg = parse_config(cfg_text, path)
    raise SystemExit(recorder.run(cfg, eid, 0))


class Rig:
    """The supervisor's shared world (rings, tables, metrics) and a recorder process."""

    def __init__(self, tmp: Path, engine_id: str, dsn: str) -> None:
        from ops.supervisor import Supervisor

        self.dsn = dsn
        self.cfg, self.text = _config(tmp, engine_id, dsn)
        self.eid = engine_id
        self.sup = Supervisor(self.cfg, tmp / "config.toml", status=False)
        self.sup._create_regions()
        self.rings = self.sup.rings
        self.prod = {
            n: self.rings[n].producer(wait="backoff", timeout_s=5.0)
            for n in ("md", "orders", "events", "risk", "control")
        }
        self.proc: Any = None
        with psycopg.connect(dsn, autocommit=True) as c:
            migrate(c)

    def start(self) -> None:
        ctx = mp_context()
        self.proc = ctx.Process(
            target=_recorder_main,
            args=(self.text, str(self.cfg.source_path), self.eid, self.dsn, os.getpid()),
        )
        self.proc.start()

    def counters(self) -> dict[str, int]:
        return self.sup.metrics["recorder"].counters()

    def stop(self) -> int:
        self.prod["control"].publish(Control(int(ControlCommand.STOP), time.monotonic_ns()))
        for n in ("md", "orders", "events", "risk"):
            self.prod[n].close()
        self.proc.join(60)
        return self.proc.exitcode

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
            self.proc.join(10)
        self.sup._remove_regions()


def _orders(lo: int, hi: int) -> list[NewOrder]:
    return [NewOrder(c, 1, 1, 1, 2, 1, 10_000 + c, 10, 5, 6) for c in range(lo, hi)]


def _events(lo: int, hi: int) -> list:
    out: list = []
    for c in range(lo, hi):
        out.append(OrderAccepted(c, c, 1, 1, 10_000, 10, 5, 100 + c, 110 + c))
        out.append(OrderFilled(c, c, 1, 1, 10_000, 10, 10, 0, 0.5, 2, c, 5, 200 + c, 210 + c))
    return out


def _counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        return {
            t: c.execute(f"SELECT count(*) FROM {t} WHERE run_id = %s", (RUN_ID,)).fetchone()[0]
            for t in ("orders", "order_events", "fills", "risk_events", "quotes")
        }


def _wait(pred: Any, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _publish(rig: Rig, lo: int, hi: int) -> None:
    rig.prod["orders"].publish_batch(_orders(lo, hi))
    rig.prod["events"].publish_batch(_events(lo, hi))
    rig.prod["risk"].publish(RiskEvent(1, 1, lo, "limit", 1.0, 0.5, lo))


def test_every_record_arrives_once_across_a_recorder_crash(
    tmp_path: Path, pg_dsn: str, engine_id: str
) -> None:
    rig = Rig(tmp_path, engine_id, pg_dsn)
    try:
        rig.start()
        _publish(rig, 1, 51)
        quotes = [
            Quote(1, 100, 1, 101, 1, 1_700_000_000_000_000_000 + i, time.monotonic_ns(), i)
            for i in range(300)
        ]
        rig.prod["md"].publish_batch(quotes)
        assert _wait(lambda: _counts(pg_dsn)["fills"] == 50)
        os.kill(
            rig.proc.pid, signal.SIGKILL
        )  # mid-stream: what it read but did not store is re-read
        rig.proc.join(10)
        _publish(rig, 51, 101)
        rig.start()  # resumes from its ring cursors
        # market data the killed recorder had read but not written is gone (it is not
        # journaled): this incarnation's quotes are what must reach the database
        rig.prod["md"].publish_batch(quotes)
        assert rig.stop() == 0
        got = _counts(pg_dsn)
        assert got == {
            "orders": 100,
            "order_events": 200,
            "fills": 100,
            "risk_events": 2,
            "quotes": got["quotes"],
        }
        c = rig.counters()
        assert got["quotes"] + c["md_missed"] >= 1  # market data is recorded (or counted as missed)
        with psycopg.connect(pg_dsn) as conn:
            coids = [r[0] for r in conn.execute("SELECT client_order_id FROM orders ORDER BY 1")]
            assert coids == list(range(1, 101))
            assert conn.execute("SELECT sum(qty), sum(fee) FROM fills").fetchone() == (1000, 50.0)
    finally:
        rig.close()


def test_a_record_the_schema_refuses_does_not_block_the_others(
    tmp_path: Path, pg_dsn: str, engine_id: str
) -> None:
    rig = Rig(tmp_path, engine_id, pg_dsn)
    try:
        rig.start()
        bad = OrderAccepted(5, 5, 1 << 40, 1, 10_000, 10, 5, 100, 110)  # instrument id past int4
        rig.prod["orders"].publish_batch(_orders(1, 11))
        rig.prod["events"].publish_batch([*_events(1, 5), bad, *_events(5, 11)])
        assert rig.stop() == 0
        assert _counts(pg_dsn) == {
            "orders": 10,
            "order_events": 20,
            "fills": 10,
            "risk_events": 0,
            "quotes": 0,
        }
        c = rig.counters()
        assert c["db_rejected"] == 1 and c["db_errors"] == 0
    finally:
        rig.close()


def test_database_outage_is_journaled_and_replayed(tmp_path: Path, engine_id: str) -> None:
    base = Path(tempfile.mkdtemp(prefix="gkrec", dir="/tmp"))
    db = EmbeddedPostgres(base / "pg")
    rig = None
    try:
        dsn = db.start()
        rig = Rig(tmp_path, engine_id, dsn)
        rig.start()
        _publish(rig, 1, 21)
        assert _wait(lambda: _counts(dsn)["fills"] == 20)
        db.stop()
        _publish(rig, 21, 61)  # the database is down: these go to the journal only
        journal = tmp_path / "var" / "journal" / f"{engine_id}-{RUN_ID}.journal"
        assert _wait(lambda: journal.exists() and journal.stat().st_size > 0)
        assert _wait(lambda: rig.counters()["db_errors"] > 0)
        db.restart()
        assert _wait(lambda: _counts(dsn)["fills"] == 60, 60)
        assert _wait(lambda: journal.stat().st_size == 0)
        _publish(rig, 61, 71)
        assert rig.stop() == 0
        assert _counts(dsn) == {
            "orders": 70,
            "order_events": 140,
            "fills": 70,
            "risk_events": 3,
            "quotes": 0,
        }
        assert rig.counters()["replayed"] >= 40
    finally:
        if rig is not None:
            rig.close()
        db.stop()
        shutil.rmtree(base, ignore_errors=True)
