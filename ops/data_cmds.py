"""``gekko data import`` and ``gekko data ls``: fill the market-data catalog and show it.

Kept out of ops/cli.py so the command file stays a table of contents. Each import kind reads
its input with the reader the replay already trusts (``engine.sources.replay`` for CSV/Parquet
quotes and trades, ``engine.lobster_checked`` through ``ReplaySource.from_lobster`` for LOBSTER
pairs, ``engine.sources.binance_capture`` for Binance captures, the recorder's tables for
recorded runs), so a row rejected on replay is rejected on import, for the same reason, counted
the same way; then ``engine.catalog_rows`` and ``engine.catalog.CatalogWriter`` store it. The
catalog's layout and each kind's details: docs/data-catalog.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.catalog import CatalogWriter, list_catalog
from engine.catalog_rows import BookRows, message_batches
from engine.instruments import Instrument, InstrumentTable
from engine.md_columns import BATCH_ROWS, MD_DTYPE, MdKind, empty, is_columnar
from engine.md_rejects import BadRowError, RejectCounter
from ops.cli_common import load_config_or_exit
from ops.config import Config

KINDS = ("quotes", "trades", "lobster", "binance", "postgres")
#: the venue partition an import writes when --venue is not given
DEFAULT_VENUE = {"lobster": "nasdaq", "binance": "binance", "postgres": "gekko"}
_LOBSTER_NAME = re.compile(r"([A-Za-z.]+)_(\d{4}-\d{2}-\d{2})_\d+_\d+_message_(\d+)")


class ImportRefused(ValueError):
    """An import that cannot start (bad arguments, unknown instrument): exit 2."""


# --- instruments -------------------------------------------------------------------------------


def import_instruments(cfg: Config, symbol: str, tick: float, lot: float) -> InstrumentTable:
    """The config's instruments, plus ``symbol`` when the config lacks it and its tick and lot
    sizes are given (a catalog may hold what no config trades yet)."""
    table = cfg.instrument_table()
    if not symbol or symbol in {i.symbol for i in table}:
        if tick or lot:
            ins = table.by_symbol(symbol) if symbol else None
            if ins is None or (tick and tick != ins.tick_size) or (lot and lot != ins.lot_size):
                raise ImportRefused(
                    f"--tick-size/--lot-size define an instrument the config lacks; "
                    f"{symbol or 'no --symbol'} is in the config (use its sizes)"
                )
        return table
    if not tick or not lot:
        raise ImportRefused(
            f"instrument {symbol!r} is not in the config's [[instruments]]: give --tick-size "
            f"and --lot-size to import it"
        )
    iid = max((i.instrument_id for i in table), default=0) + 1
    extra = Instrument(instrument_id=iid, symbol=symbol, tick_size=tick, lot_size=lot)
    return InstrumentTable([*table, extra])


# --- the kinds ---------------------------------------------------------------------------------


def _items(src: Any) -> Iterator[Any]:
    """A source's data as row batches (BookSnapshots in between): its columnar form when it
    has one, else its messages gathered."""
    if is_columnar(src):
        yield from src.preamble()
        yield from src.batches()
    else:
        yield from message_batches(iter(src))


def file_items(
    kind: str, paths: list[str], table: InstrumentTable, symbol: str, rejects: RejectCounter
) -> Iterator[Any]:
    """CSV/Parquet quotes or trades, parsed and checked by the replay's reader."""
    from engine.sources.replay import ReplaySource

    src = ReplaySource(table, symbol=symbol or None, rejects=rejects, **{kind: paths})
    return _items(src)


def lobster_pairs(paths: list[str]) -> list[tuple[str, str, str, str, int]]:
    """``(message, orderbook, symbol, date, levels)`` of each LOBSTER pair among ``paths``
    (each message file with its orderbook file; names as LOBSTER ships them)."""
    msgs = [p for p in paths if "_message_" in Path(p).name]
    out = []
    for m in msgs:
        ob = str(Path(m).with_name(Path(m).name.replace("_message_", "_orderbook_")))
        if ob not in paths and not Path(ob).is_file():
            raise ImportRefused(f"LOBSTER message file {m}: no orderbook file {ob}")
        hit = _LOBSTER_NAME.match(Path(m).name)
        if hit is None:
            raise ImportRefused(
                f"LOBSTER file {m}: name is not TICKER_YYYY-MM-DD_START_END_message_LEVELS.csv"
            )
        out.append((m, ob, hit.group(1), hit.group(2), int(hit.group(3))))
    if not out or len(out) * 2 < len(paths):
        raise ImportRefused("lobster: give message/orderbook file pairs (LOBSTER's file names)")
    return out


def lobster_items(
    pair: tuple[str, str, str, str, int], ins: Instrument, rejects: RejectCounter
) -> Iterator[Any]:
    """A LOBSTER day: its opening book, then trades and deltas (``ReplaySource.from_lobster``).
    Times: the file's seconds after midnight on the day its name gives, taken as UTC."""
    from engine.sources.replay import ReplaySource

    msg, ob, _sym, day, levels = pair
    date_ns = int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()) * 10**9
    divisor = round(ins.tick_size * 10_000)  # LOBSTER prices are dollars x 10000
    if divisor < 1 or abs(divisor - ins.tick_size * 10_000) > 1e-6:
        raise ImportRefused(f"{ins.symbol}: tick_size {ins.tick_size} is no multiple of $0.0001")
    src = ReplaySource.from_lobster(
        msg,
        ob,
        levels,
        ins.instrument_id,
        price_divisor=divisor,
        date_ns=date_ns,
        instruments=[ins],
        rejects=rejects,
    )
    return _items(src)


def binance_items(path: str, ins: Instrument, rejects: RejectCounter) -> Iterator[Any]:
    from engine.sources.binance_capture import capture_messages

    return message_batches(capture_messages(path, ins, rejects=rejects))


def binance_symbol(path: str) -> str:
    """The symbol of a capture's first stream, upper-cased (``btcusdt@trade`` -> BTCUSDT)."""
    from engine.sources.binance_capture import read_capture

    for _k, _ns, body in read_capture(path):
        m = re.match(rb'\{"stream":"([a-z0-9]+)@', body)
        if m:
            return m.group(1).decode().upper()
    raise ImportRefused(f"binance capture {path}: no combined-stream message")


# --- recorded runs -----------------------------------------------------------------------------

_PG_SQL = {
    "quotes": "SELECT instrument_id, ts_event, bid_px, bid_qty, ask_px, ask_qty, seq "
    "FROM quotes WHERE run_id = %s ORDER BY ts_event, seq",
    "trades": "SELECT instrument_id, ts_event, side, px, qty, trade_id "
    "FROM trades WHERE run_id = %s ORDER BY ts_event, trade_id",
}
_PG_COLS = {
    "quotes": ("instrument_id", "ts_event", "bid_px", "bid_qty", "ask_px", "ask_qty", "seq"),
    "trades": ("instrument_id", "ts_event", "side", "px", "qty", "seq"),
}


def pg_run(conn: Any, run_id: int | None) -> int:
    """The run to import: the one named, or the latest recorded."""
    if run_id is not None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = %s", (run_id,)).fetchone() is None:
            raise ImportRefused(f"postgres: no run {run_id}")
        return run_id
    row = conn.execute("SELECT max(run_id) FROM runs").fetchone()
    if row is None or row[0] is None:
        raise ImportRefused("postgres: no recorded run")
    return int(row[0])


def pg_id_map(conn: Any, run_id: int, table: InstrumentTable) -> dict[int, int]:
    """Recorded instrument id -> the config's, by symbol (``run_instruments``, else the
    ``instruments`` table); a recorded tick size other than the config's is refused."""
    rows = conn.execute(
        "SELECT instrument_id, symbol, tick_size FROM run_instruments WHERE run_id = %s",
        (run_id,),
    ).fetchall()
    if not rows:
        rows = conn.execute("SELECT instrument_id, symbol, tick_size FROM instruments").fetchall()
    by_symbol = {i.symbol: i for i in table}
    out: dict[int, int] = {}
    for iid, sym, tick in rows:
        ins = by_symbol.get(sym)
        if ins is None:
            continue
        if float(tick) != ins.tick_size:
            raise ImportRefused(
                f"postgres run {run_id}: {sym} was recorded with tick_size {tick}, the config "
                f"says {ins.tick_size}"
            )
        out[int(iid)] = ins.instrument_id
    return out


def pg_batches(
    conn: Any, what: str, run_id: int, ids: dict[int, int], rejects: RejectCounter
) -> Iterator[np.ndarray]:
    """One recorded table of a run as checked rows, streamed through a server-side cursor."""
    from engine.md_rejects import validate_rows

    kind = MdKind.QUOTE if what == "quotes" else MdKind.TRADE
    lut_from = np.array(sorted(ids), dtype=np.int64)
    lut_to = np.array([ids[k] for k in sorted(ids)], dtype=np.int64)
    done = 0
    last_quote_ts: dict[int, int] = {}
    with conn.cursor(name=f"gekko_data_{what}") as cur:
        cur.execute(_PG_SQL[what], (run_id,))
        while chunk := cur.fetchmany(BATCH_ROWS):
            a = np.asarray(chunk, dtype=np.int64)
            rows = empty(len(a))
            for j, col in enumerate(_PG_COLS[what]):
                rows[col] = a[:, j]
            rows["kind"] = int(kind)
            pos = np.searchsorted(lut_from, a[:, 0]).clip(0, max(len(lut_from) - 1, 0))
            known = (lut_from[pos] == a[:, 0]) if len(lut_from) else np.zeros(len(a), bool)
            rows["instrument_id"] = np.where(known, lut_to[pos] if len(lut_to) else 0, -1)
            kept = validate_rows(
                rows,
                ids.values(),
                rejects,
                last_quote_ts=last_quote_ts,
                where=f"postgres run {run_id} {what}",
                offset=done,
            )
            done += len(rows)
            yield kept.astype(MD_DTYPE, copy=False)


# --- the command ------------------------------------------------------------------------------


def _write(
    root: str,
    venue: str,
    part: str,
    table: Iterable[Instrument],
    items: Iterable[Any],
    rejects: RejectCounter,
) -> dict:
    with CatalogWriter(root, venue, part, table, rejects=rejects) as w:
        for rows in BookRows().feed(items):
            w.write(rows)
    return {f"{venue}/{s}/{d}": n for (s, d), n in sorted(w.written.items())}


def run_import(args: argparse.Namespace, cfg: Config) -> dict:  # noqa: C901 - one branch a kind
    """Import ``args.paths`` of ``args.kind``; returns ``{"written": {...}, "rejected": {...}}``."""
    root = args.catalog or cfg.market.catalog_dir
    venue = args.venue or DEFAULT_VENUE.get(args.kind, "local")
    policy = args.on_bad_row or cfg.market.on_bad_row
    rejects = RejectCounter(policy)
    written: dict[str, int] = {}
    kind = args.kind
    if kind != "postgres" and not args.paths:
        raise ImportRefused(f"{kind}: give the files to import")
    if kind in ("quotes", "trades"):
        table = import_instruments(cfg, args.symbol, args.tick_size, args.lot_size)
        items = file_items(kind, args.paths, table, args.symbol, rejects)
        written |= _write(root, venue, args.part or kind, table, items, rejects)
    elif kind == "lobster":
        for pair in lobster_pairs(args.paths):
            sym = args.symbol or pair[2]
            table = import_instruments(cfg, sym, args.tick_size, args.lot_size)
            ins = table.by_symbol(sym)
            items = lobster_items(pair, ins, rejects)
            written |= _write(root, venue, args.part or "lobster", [ins], items, rejects)
    elif kind == "binance":
        for path in args.paths:
            sym = args.symbol or binance_symbol(path)
            table = import_instruments(cfg, sym, args.tick_size, args.lot_size)
            ins = table.by_symbol(sym)
            items = binance_items(path, ins, rejects)
            written |= _write(root, venue, args.part or "binance", [ins], items, rejects)
    else:
        if args.paths:
            raise ImportRefused("postgres: no paths (use --run and --dsn)")
        written |= _import_pg(args, cfg, root, venue, rejects)
    return {"written": written, "rejected": dict(sorted(rejects.counts.items()))}


def _import_pg(
    args: argparse.Namespace, cfg: Config, root: str, venue: str, rejects: RejectCounter
) -> dict:
    import psycopg

    table = cfg.instrument_table()

    def body(conn: Any) -> dict:
        run_id = pg_run(conn, args.run)
        ids = pg_id_map(conn, run_id, table)
        out: dict[str, int] = {}
        for what in ("quotes", "trades"):
            with conn.transaction():  # a server-side cursor lives in a transaction
                items = pg_batches(conn, what, run_id, ids, rejects)
                out |= _write(root, venue, f"{what}_run{run_id}", table, items, rejects)
        return out

    if args.dsn:
        with psycopg.connect(args.dsn) as conn:
            return body(conn)
    from ops.store.pg import PgSettings, configured_connection

    s = PgSettings.from_config(cfg)
    if not s.enabled:
        raise ImportRefused("postgres: [storage.postgres] mode is 'off': give --dsn")
    with configured_connection(s) as conn:
        return body(conn)


def cmd_data_import(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    try:
        out = run_import(args, cfg)
    except ImportRefused as e:
        print(f"gekko data import: {e}", file=sys.stderr)
        return 2
    except (BadRowError, ValueError, OSError) as e:
        print(f"gekko data import: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the database's errors (psycopg is imported only when needed)
        if not type(e).__module__.startswith("psycopg"):
            raise
        from ops.secrets import redact  # a connection error may quote the DSN

        print(f"gekko data import: database error: {redact(str(e))}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for part, n in out["written"].items():
        print(f"{part}: {n} rows")
    total = sum(out["rejected"].values())
    why = ", ".join(f"{k} {v}" for k, v in out["rejected"].items())
    print(f"rejected: {total}" + (f" ({why})" if why else ""))
    return 0


def cmd_data_ls(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    root = args.catalog or cfg.market.catalog_dir
    try:
        rows = list_catalog(root)
    except ValueError as e:
        print(f"gekko data ls: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print(f"{root}: empty (gekko data import fills it)")
        return 0
    head = ("venue", "instrument", "first", "last", "days", "rows", "MiB", "parts")
    table = [head] + [
        (
            r["venue"],
            r["instrument"],
            r["first"],
            r["last"],
            str(r["days"]),
            str(r["rows"]),
            f"{r['bytes'] / 2**20:.1f}",
            ",".join(r["parts"]),
        )
        for r in rows
    ]
    widths = [max(len(t[k]) for t in table) for k in range(len(head))]
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip())
    return 0


def add_parsers(sub: argparse._SubParsersAction, with_config: Any) -> None:
    """Register ``gekko data import`` and ``gekko data ls``."""
    data = sub.add_parser("data", help="the market-data catalog: import, ls")
    dsub = data.add_subparsers(dest="data_command", required=True)
    imp = with_config(dsub.add_parser("import", help="import market data into the catalog"))
    imp.add_argument("kind", choices=KINDS, help="what the files are")
    imp.add_argument("paths", nargs="*", help="the files (LOBSTER: message and orderbook files)")
    imp.add_argument("--catalog", default="", help="catalog directory ([market] catalog_dir)")
    imp.add_argument("--venue", default="", help="venue partition (default: by kind)")
    imp.add_argument(
        "--symbol",
        default="",
        help="instrument of files without a symbol column; LOBSTER / Binance: the instrument "
        "(default: from the file)",
    )
    imp.add_argument("--tick-size", type=float, default=0.0, help="for a symbol not in config")
    imp.add_argument("--lot-size", type=float, default=0.0, help="for a symbol not in config")
    imp.add_argument(
        "--part", default="", help="part name (an import replaces its own part: default kind)"
    )
    imp.add_argument("--run", type=int, default=None, help="postgres: run id (default latest)")
    imp.add_argument("--dsn", default="", help="postgres: database (default: config's)")
    imp.add_argument("--on-bad-row", choices=("skip", "fail"), default="", help="bad rows")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=cmd_data_import)
    ls = with_config(dsub.add_parser("ls", help="what the catalog holds"))
    ls.add_argument("--catalog", default="", help="catalog directory ([market] catalog_dir)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_data_ls)
