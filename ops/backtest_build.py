"""One backtest built from a config, the way ``gekko backtest`` builds it: shared by that command
and by each trial of ``gekko sweep`` (ops/sweep_trial.py), so a sweep's trial replays exactly
what ``gekko backtest`` would on the same config.

What it wires: the venue's market data as the feed reads it (``procs.build.build_data_client``),
checked and counted as in ``gekko run`` (``engine.md_rejects``, ``[market] on_bad_row``), capped
at ``events`` messages, with the forecasts the infer process would publish interleaved
(``procs.infer.with_forecasts``), into an ``engine.backtest.InlineRuntime`` over the configured
strategies, risk limits, simulated venue, exec policy and portfolio.

``window_ns``: only market data with ``start <= ts_event < end`` (a sweep's time window of a
quote/trade replay); the catalog source pushes its own ``[market] catalog_start/_end`` down to
the files instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ops.config import Config


class MarketUnavailable(Exception):
    """The market data cannot be opened (a replay file that is no such file at all)."""


@dataclass
class Backtest:
    runtime: Any  # engine.backtest.InlineRuntime
    rejects: Any  # engine.md_rejects.RejectCounter: the market data's rejected rows


def _in_window(source: Iterable[Any], start: int, end: int) -> Iterator[Any]:
    for msg in source:
        t = getattr(msg, "ts_event", None)
        if t is None or start <= t < end:
            yield msg
        elif t >= end:
            return


def build_backtest(
    cfg: Config, events: int = 0, window_ns: tuple[int, int] | None = None
) -> Backtest:
    """The runtime of one backtest of ``cfg`` over at most ``events`` market messages (0:
    ``[backtest] events``); raises ``MarketUnavailable``."""
    from engine.backtest import InlineRuntime
    from engine.md_rejects import MdValidator, RejectCounter, validated
    from procs.build import build_data_client, build_venue
    from procs.infer import with_forecasts

    instruments = cfg.instrument_table()
    # the feed's checks and counts, as in `gekko run` (engine.md_rejects; [market] on_bad_row)
    rejects = RejectCounter(cfg.market.on_bad_row)
    # the venue's market data, as the feed reads it (procs.build.build_data_client)
    client = build_data_client(cfg, rejects)
    try:
        client.connect()
    except ValueError as exc:  # a replay file that is no such file at all
        raise MarketUnavailable(str(exc)) from None
    client.subscribe(instruments.ids)
    updates: Iterable[Any] = client.updates()
    if window_ns is not None:
        updates = _in_window(updates, *window_ns)
    market = validated(
        itertools.islice(updates, events or cfg.backtest.events),
        MdValidator(instruments.ids),
        rejects,
    )
    rt = InlineRuntime(
        instruments,
        cfg.strategy_specs(),
        cfg.risk,
        build_venue(cfg, instruments),
        # the market, with the forecasts the infer process would publish interleaved at their
        # simulated time (procs.infer.with_forecasts; unchanged when [inference] is off), and
        # the venue's halts where [sim] schedules them (procs.build.build_data_client)
        with_forecasts(cfg, market),
        exec_policy=cfg.exec,
        **cfg.portfolio.backtest_kwargs(),
    )
    return Backtest(rt, rejects)
