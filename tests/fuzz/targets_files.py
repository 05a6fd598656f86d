"""Fuzz targets for files the engine reads: config.toml, replay CSV and Parquet, LOBSTER pairs
and a model's meta.json.

The contracts (each reader's documented refusal):
- config: ``ops.config.ConfigError`` naming the file and key, for any bytes at all;
- replay files: a bad file is a ``ValueError`` naming it, a bad row is skipped and counted; every
  message replayed fits a ring frame;
- LOBSTER: the checked reader refuses a file that is no LOBSTER file with a ``ValueError`` and
  rejects bad lines by reason; the strict reader refuses any flaw with a ``ValueError``;
- meta.json: ``ModelError`` (serving) / ``RegistryError`` (registry); ``gekko model list``
  (``list_models``) lists a bad directory with its error and never raises.

Each input is written to a file in one temporary directory per process (removed at exit).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import shutil
import tempfile
from pathlib import Path

from ops.config import ConfigError
from tests.fuzz import Target, wire_ok


@functools.cache
def _tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="gekko-fuzz-"))
    atexit.register(shutil.rmtree, d, True)
    return d


def _write(name: str, data: bytes) -> Path:
    p = _tmp() / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def config_toml(data: bytes) -> None:
    """Any bytes as config.toml: a ``Config``, or a ``ConfigError`` naming file and key."""
    from ops.config import load_config

    load_config(_write("config.toml", data))


def _instruments() -> list:
    from engine.instruments import Instrument

    return [
        Instrument(instrument_id=1, symbol="AAA", tick_size=0.01, lot_size=1.0),
        Instrument(instrument_id=2, symbol="BBB", tick_size=0.5, lot_size=0.001),
    ]


_KINDS = ("quotes", "trades", "bars")


def _replay(path: Path, kind: str) -> None:
    from engine.sources.replay import ReplaySource

    src = ReplaySource(_instruments(), symbol="AAA", **{kind: path})
    msgs = list(src)
    wire_ok(msgs)
    assert len(msgs) + sum(src.rejected.values()) >= 0


def replay_csv(data: bytes) -> None:
    """A replay CSV file; the first byte picks quotes, trades or bars (the rest is the file)."""
    if not data:
        return
    _replay(_write("replay.csv", data[1:]), _KINDS[data[0] % 3])


def replay_parquet(data: bytes) -> None:
    """A replay Parquet file; the first byte picks quotes, trades or bars."""
    if not data:
        return
    _replay(_write("replay.parquet", data[1:]), _KINDS[data[0] % 3])


LOBSTER_SPLIT = b"\n#\n"  # message file, this, orderbook file


def lobster(data: bytes) -> None:
    """A LOBSTER pair (``message`` + ``LOBSTER_SPLIT`` + ``orderbook``, one level) through the
    checked reader and its replay, and the strict reader."""
    from engine.lobster import read_lobster
    from engine.lobster_checked import load_lobster_checked
    from engine.md_rejects import RejectCounter

    msg, _, book = data.partition(LOBSTER_SPLIT)
    mp, bp = _write("lob_message.csv", msg), _write("lob_orderbook.csv", book)
    with contextlib.suppress(ValueError):
        read_lobster(mp, bp, levels=1)
    checked = load_lobster_checked(mp, bp, levels=1, price_divisor=100)
    counter = RejectCounter(log_first=0)
    wire_ok(list(checked.messages(counter, instrument_id=1, date_ns=0, include_trades=True)))


def model_meta(data: bytes) -> None:
    """A model directory's meta.json, as serving, the registry and ``gekko model list`` read it."""
    from models import registry, serving
    from models.registration import model_record

    root = _tmp() / "models"
    d = root / "m" / "v1"
    d.mkdir(parents=True, exist_ok=True)
    (d / "meta.json").write_bytes(data)
    with contextlib.suppress(serving.ModelError):
        serving.read_meta(d)
    for row in registry.list_models(root, include_shipped=False):
        assert "error" in row or row["name"] is not None
    try:
        meta = registry.read_meta(d)
    except registry.RegistryError:
        return
    rec = model_record(d, meta)
    assert len(rec["params"]) <= 2 * 60_000 and len(rec["metrics"]) <= 2 * 60_000


TARGETS = (
    Target("config_toml", config_toml, (ConfigError,)),
    Target("replay_csv", replay_csv, (ValueError,)),
    Target("replay_parquet", replay_parquet, (ValueError,)),
    Target("lobster", lobster, (ValueError,)),
    Target("model_meta", model_meta),
)
