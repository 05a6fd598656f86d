"""Preflight: every check that needs nothing started, done before anything starts.

Why: ``ops.config`` checks what the file alone can tell (types, ranges, unknown keys). What needs
a look at the machine — can the strategies be imported and built with their parameters, is the
replay file there and of the declared format, can ``var_dir`` be written, do the pinned CPUs
exist — used to surface only once PostgreSQL, Redis and every worker were up: as a worker's
traceback and an exit code 1. ``gekko run`` and ``gekko backtest`` call ``preflight`` first;
each failure is a ``ConfigError`` naming the file and the key (the CLI exits 2, no traceback).

Import path: strategy modules resolve the same way in both commands and in every worker — the
directory ``gekko`` is started from comes first on ``sys.path`` and in ``PYTHONPATH``, which the
workers inherit (``python -m`` puts it there too; the ``gekko`` script alone did not).
"""

from __future__ import annotations

import csv
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ops.config import Config, ConfigError

log = logging.getLogger("gekko.preflight")


def preflight(cfg: Config, command: str) -> None:
    """The checks of ``command`` ("run" or "backtest"); raises ConfigError on the first failure."""
    ensure_import_path()
    check_strategies(cfg)
    check_replay(cfg)
    check_catalog(cfg)
    if command == "run":
        check_var_dir(cfg)
        check_cpus(cfg)


def _error(cfg: Config, key: str, problem: str) -> ConfigError:
    return ConfigError(cfg.source_path or "<config>", key, problem)


# --- import path -------------------------------------------------------------------------------


def ensure_import_path() -> None:
    """The working directory first on ``sys.path`` and in ``PYTHONPATH`` (for the workers)."""
    root = os.getcwd()
    if root not in sys.path:
        sys.path.insert(0, root)
    env = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in env:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *env])


# --- strategies --------------------------------------------------------------------------------


def check_strategies(cfg: Config) -> None:
    """Import each strategy and build it with its params, as the strategy process will.

    Building runs the class's own checks too (``Params`` and its ``__init__``); a strategy with
    params but no declared ``Params`` is accepted with a warning: nothing checks its keys."""
    from engine.strategies.base import load_strategy
    from engine.strategies.params import ParamError
    from engine.strategy_host import StrategyHost

    instruments = cfg.instrument_table()
    for spec in cfg.strategy_specs():
        where = f"[[strategies]] id={spec['strategy_id']}"
        try:
            cls = load_strategy(spec["path"])
        except ValueError as exc:
            raise _error(cfg, f"{where} path", str(exc)) from None
        if cls.Params is None and spec["params"]:
            log.warning(
                "%s: %s declares no Params struct, so its params (%s) are not checked "
                "(engine/strategies/base.py says how to declare them)",
                where,
                cls.__name__,
                ", ".join(sorted(spec["params"])),
            )
        try:
            StrategyHost([spec], instruments, on_error="raise")
        except ParamError as exc:
            key = f"{where} params.{exc.key}" if exc.key else f"{where} params"
            raise _error(cfg, key, f"{exc.problem} ({cls.__name__})") from None
        except Exception as exc:  # the class's own checks, or a bug in its __init__
            raise _error(
                cfg, where, f"{cls.__name__} cannot be built: {type(exc).__name__}: {exc}"
            ) from None


# --- replay files ------------------------------------------------------------------------------


def check_replay(cfg: Config) -> None:
    """Replay files readable and of the declared format, from their first line or schema.

    Only the file's shape is checked here; bad rows are the replay's to skip and count."""
    m = cfg.market
    if m.source != "replay":
        return
    from engine.sources.replay import _QUOTE_COLS, _TRADE_COLS

    for key, required in (("replay_quotes", _QUOTE_COLS), ("replay_trades", _TRADE_COLS)):
        path = getattr(m, key)
        if path:
            problem = _table_problem(Path(path), required)
            if problem:
                raise _error(cfg, f"market.{key}", f"{path}: {problem}")
    if m.replay_lobster_messages:
        for key, want in (
            ("replay_lobster_messages", 6),
            ("replay_lobster_orderbook", 4 * m.replay_lobster_levels),
        ):
            path = getattr(m, key)
            problem = _lobster_problem(Path(path), want)
            if problem:
                raise _error(cfg, f"market.{key}", f"{path}: {problem}")


def check_catalog(cfg: Config) -> None:
    """``source = "catalog"``: the venue is there and the instruments' units are the catalog's
    (its index alone is read: the data is the replay's to stream)."""
    if cfg.market.source != "catalog":
        return
    from procs.build import build_catalog_source

    try:
        src = build_catalog_source(cfg)
    except ValueError as exc:
        raise _error(cfg, "market.catalog_dir", str(exc)) from None
    if not src.symbols:
        have = ", ".join(src.missing)
        raise _error(
            cfg,
            "market.catalog_dir",
            f"{src.root} holds none of the instruments ({have}) "
            f"for venue {src.venue!r}: gekko data ls shows what it holds",
        )


def _first_line(path: Path) -> str:
    """The first line of a (possibly compressed) text file; ValueError if it is not text."""
    import pyarrow as pa

    buf = b""
    with pa.input_stream(str(path), compression="detect") as f:
        while b"\n" not in buf:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 1 << 20:
                raise ValueError("no line break in its first MiB: not a CSV file")
    line = buf.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("not a text (CSV) file") from None


def _table_problem(path: Path, required: tuple[str, ...]) -> str:
    """Why a quotes/trades file cannot be replayed ("" when its columns are right)."""
    from engine.sources.replay import _CSV_SUFFIXES, _PARQUET_SUFFIXES, _TS_ALIASES, _norm

    name = path.name.lower()
    try:
        if name.endswith(_PARQUET_SUFFIXES):
            import pyarrow.parquet as pq

            columns = list(pq.read_schema(path).names)
        elif name.endswith(_CSV_SUFFIXES):
            line = _first_line(path)
            if not line.strip():
                return "empty (no header line)"
            columns = next(csv.reader([line]))
        else:
            return "unsupported format (want .csv or .parquet)"
    except Exception as exc:  # OSError, ValueError, and pyarrow's own error types
        return f"cannot read: {exc}"
    have = {_norm(c) for c in columns}
    aliases = {**_TS_ALIASES, "symbol": ("symbol", "instrument_id")}
    for want in (*required, "symbol"):
        if not have & set(aliases.get(want, (want,))):
            return (
                f"missing required column {want!r} (columns: {', '.join(columns) or 'none'}); "
                f"expected {', '.join(required)} and symbol or instrument_id"
            )
    return ""


def _lobster_problem(path: Path, columns: int) -> str:
    """Why a LOBSTER message/orderbook file cannot be replayed ("" when its first row fits)."""
    try:
        line = _first_line(path)
    except (OSError, ValueError) as exc:
        return f"cannot read: {exc}"
    if not line.strip():
        return "empty"
    cells = line.split(",")
    if len(cells) != columns:
        return f"a LOBSTER row here has {columns} numeric columns, this one has {len(cells)}"
    try:
        [float(c) for c in cells]
    except ValueError:
        return f"not a LOBSTER file: its first row is not numeric ({line[:80]!r})"
    return ""


# --- var_dir and CPUs (gekko run only) ---------------------------------------------------------


def check_var_dir(cfg: Config) -> None:
    """``var_dir`` exists or can be created, and a file can be written in it; the storage
    directories configured outside it could be created (they are not created here)."""
    var = Path(cfg.engine.var_dir)
    try:
        var.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=var, prefix=".preflight-"):
            pass
    except OSError as exc:
        raise _error(
            cfg, "engine.var_dir", f"{var} is not a writable directory: {exc.strerror or exc}"
        ) from None
    pg = cfg.storage.postgres
    if pg.mode == "off":
        return
    data_dir = pg.data_dir if pg.mode == "embedded" else ""
    for key, value in (("data_dir", data_dir), ("journal_dir", pg.journal_dir)):
        problem = _dir_problem(Path(value)) if value else ""
        if problem:
            raise _error(cfg, f"storage.postgres.{key}", f"{value}: {problem}")
    check_anchor_file(cfg)


def check_anchor_file(cfg: Config) -> None:
    """``[audit] anchor_file`` opens for appending (created if missing): an anchor target that
    fails only when the first anchor is due would leave the audit chain unanchored unnoticed."""
    path = cfg.audit.anchor_file
    if not path:
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    except OSError as exc:
        raise _error(
            cfg,
            "audit.anchor_file",
            f"{path} cannot be opened for appending: {exc.strerror or exc}",
        ) from None


def _dir_problem(path: Path) -> str:
    """Why ``path`` cannot be (or become) a writable directory ("" when it can)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return "no existing parent directory"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return ""


def available_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask), or all of them where unknown."""
    getter = getattr(os, "sched_getaffinity", None)
    return set(getter(0)) if getter else set(range(os.cpu_count() or 1))


def check_cpus(cfg: Config) -> None:
    """Pinned CPUs must exist here: an error, or with ``pin_strict = false`` a warning (the
    worker then runs unpinned where the OS refuses, as ``procs.runtime.pin_to_cpus`` says)."""
    from procs.runtime import enabled_workers

    have = available_cpus()
    for name in enabled_workers(cfg):
        missing = sorted(set(cfg.processes.get(name).cpus) - have)
        if not missing:
            continue
        problem = (
            f"CPU {', '.join(map(str, missing))} not available on this host "
            f"(available: {_ranges(have)})"
        )
        if cfg.supervisor.pin_strict:
            raise _error(
                cfg,
                f"processes.{name}.cpus",
                f"{problem}; set [supervisor] pin_strict = false to run unpinned instead",
            )
        log.warning(
            "processes.%s.cpus: %s; pin_strict = false: %s pins to those that exist, or runs "
            "unpinned",
            name,
            problem,
            name,
        )


def _ranges(cpus: Any) -> str:
    """{0, 1, 2, 5} -> '0-2,5'."""
    out: list[str] = []
    for c in sorted(cpus):
        if out and out[-1].split("-")[-1] == str(c - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{c}"
        else:
            out.append(str(c))
    return ",".join(out)
