"""Bars for ``gekko train`` / ``gekko eval``: the glue between data sources and ``models``.

``models`` never imports the engine, so turning the engine's synthetic market into bars lives
here: the market is built from config.toml exactly as ``gekko run`` builds it, and its quotes and
trades go through ``engine.bars.BarAggregator`` — the aggregator the infer process uses — with
each bar stamped by its start time as infer stamps it. The shipped model is therefore trained on
the same bars, features and clock it is served on.

Source names (``--source``): ``synthetic`` (the engine's market), ``sine`` / ``random_walk``
(``models.data.generated_bars``), ``arch:sp500`` / ``arch:nasdaq`` / ``tsd:btc15m`` (real bars
from the test extra), ``postgres`` / ``postgres:<run_id>`` (the bars the recorder stored in
PostgreSQL, every run or one), or a CSV / Parquet file path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.data import (
    BUILTIN,
    GENERATED,
    Bars,
    clean_bars,
    generated_bars,
    load_builtin,
    load_table,
)
from ops.config import Config


def synthetic_market_bars(cfg: Config, sim_seconds: float, bar_seconds: float) -> list[Bars]:
    """One bar series per configured instrument from ``sim_seconds`` of the synthetic market."""
    from engine.bars import BarAggregator
    from engine.messages import Quote, Trade
    from procs.build import build_market

    if cfg.market.source != "synthetic":
        raise ValueError("market.source must be 'synthetic' to train on the synthetic market")
    if sim_seconds <= 0 or bar_seconds <= 0:
        raise ValueError("sim_seconds and bar_seconds must be > 0")
    ids = [i.instrument_id for i in cfg.instruments]
    slot_of = {iid: k for k, iid in enumerate(ids)}
    agg = BarAggregator(len(ids), bar_ns=int(round(bar_seconds * 1e9)))
    rows: list[list[tuple[int, float, float, float, float, float]]] = [[] for _ in ids]
    end_ns = int(sim_seconds * 1e9)

    def collect() -> None:
        for k in range(len(ids)):
            if agg.valid[k]:
                rows[k].append(
                    (
                        agg.closed_start_ns,
                        agg.open[k],
                        agg.high[k],
                        agg.low[k],
                        agg.close[k],
                        agg.volume[k],
                    )
                )

    for msg in build_market(cfg):
        ts = getattr(msg, "ts_event", None)
        if ts is None:
            continue
        if ts >= end_ns:
            break
        for _ in range(agg.due(ts)):
            agg.close_bar()
            collect()
        slot = slot_of.get(msg.instrument_id)
        if slot is None:
            continue
        if isinstance(msg, Quote):
            agg.on_quote(slot, msg.bid_px, msg.ask_px)
        elif isinstance(msg, Trade):
            agg.on_trade(slot, msg.qty)
    out = []
    for k, ins in enumerate(cfg.instruments):
        a = np.asarray(rows[k], dtype=np.float64).reshape(-1, 6)
        out.append(Bars(ins.symbol, a[:, 0].astype(np.int64), *(a[:, j] for j in range(1, 6))))
    return out


def postgres_bars(
    dsn: str, *, run_id: int | None = None, symbols: dict[int, str] | None = None
) -> list[Bars]:
    """The recorder's ``bars`` table (prices in ticks: features are ratios, units cancel), one
    series per instrument; a bar recorded by several runs at the same start counts once."""
    from ops.store.pg import connect

    sql = "SELECT instrument_id, start_ns, open, high, low, close, volume FROM bars"
    params: tuple = ()
    if run_id is not None:
        sql += " WHERE run_id = %s"
        params = (run_id,)
    sql += " ORDER BY instrument_id, start_ns"
    with connect(dsn) as conn:
        rows = conn.execute(sql, params).fetchall()
    if not rows:
        raise ValueError("no bars in PostgreSQL" + (f" for run {run_id}" if run_id else ""))
    a = np.asarray(rows, dtype=np.float64)
    out = []
    for iid in np.unique(a[:, 0]).astype(int):
        m = a[:, 0] == iid
        sym = (symbols or {}).get(int(iid), str(iid))
        out.append(clean_bars(sym, a[m, 1].astype(np.int64), [a[m, j] for j in range(2, 7)]))
    return out


def _postgres_source(source: str, cfg: Config | None, dsn: str) -> list[Bars]:
    """``postgres[:run_id]``: DSN from ``--dsn``, $GEKKO_PG_DSN or the config; an embedded
    server that is not running is started for the read and stopped again."""
    import os

    tail = source.partition(":")[2]
    if tail and not tail.isdigit():
        raise ValueError(f"postgres source: run id must be an integer, not {tail!r}")
    run_id = int(tail) if tail else None
    symbols = {i.instrument_id: i.symbol for i in cfg.instruments} if cfg else {}
    dsn = dsn or os.environ.get("GEKKO_PG_DSN", "")
    if not dsn and cfg is not None and cfg.storage.postgres.mode not in ("embedded", "off"):
        dsn = cfg.storage.postgres.dsn()  # with its TLS parameters (ops/tls.py)
    if dsn:
        return postgres_bars(dsn, run_id=run_id, symbols=symbols)
    if cfg is None or cfg.storage.postgres.mode != "embedded":
        raise ValueError("postgres source: give --dsn (storage.postgres.mode is off)")
    from ops.store.pg import EmbeddedPostgres, PgSettings

    settings = PgSettings.from_config(cfg)
    running = (Path(settings.data_dir) / "postmaster.pid").exists()
    server = EmbeddedPostgres(settings.data_dir)
    try:
        return postgres_bars(server.start(), run_id=run_id, symbols=symbols)
    finally:
        if not running:
            server.stop()


def load_source(
    source: str,
    *,
    cfg: Config | None = None,
    sim_seconds: float = 1500.0,
    bar_seconds: float = 1.0,
    n_bars: int = 5000,
    seed: int = 0,
    dsn: str = "",
) -> list[Bars]:
    """Bars for a ``--source`` name (see the module docstring)."""
    if source == "postgres" or source.startswith("postgres:"):
        return _postgres_source(source, cfg, dsn)
    if source == "synthetic":
        if cfg is None:
            raise ValueError("the synthetic market needs a config")
        return synthetic_market_bars(cfg, sim_seconds, bar_seconds)
    if source in GENERATED:
        return [generated_bars(source, n_bars, seed=seed, bar_seconds=max(1, int(bar_seconds)))]
    if source in BUILTIN:
        return load_builtin(source)
    if Path(source).suffix.lower() in (".csv", ".parquet", ".pq"):
        return load_table(source)
    known = ", ".join(("synthetic", *GENERATED, *BUILTIN, "postgres[:run_id]", "<file>"))
    raise ValueError(f"unknown data source {source!r}; known: {known}")
