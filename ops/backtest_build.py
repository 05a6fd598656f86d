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

With ``[backtest] engine = "fast"`` (the default), a columnar market (replay files, a LOBSTER
pair, the catalog: ``engine.md_columns``) with nothing the stream itself must carry (the
venue's scheduled halts) goes to the runtime as row batches, for ``engine.replay_fast``, with
the forecasts as an overlay merged into the rows (``procs.infer.ForecastOverlay``): the same
orders and fills as the message path (docs/backtesting.md). A micro model (``[inference]
micro_model_dir``) steps every message (``procs.infer_micro``): its backtests run the message path.
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
    overlay: Any = None  # procs.infer.ForecastOverlay: the forecasts and their cost (busy_ns)


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
    from procs.build import build_data_client, build_venue, set_venue_fees, venue_accounts
    from procs.infer import ForecastOverlay, with_forecasts

    instruments = cfg.instrument_table()
    overlay = ForecastOverlay(cfg)  # one model load, whichever path runs
    # the feed's checks and counts, as in `gekko run` (engine.md_rejects; [market] on_bad_row)
    rejects = RejectCounter(cfg.market.on_bad_row)
    columnar = None if overlay.micro is not None else _columnar_market(cfg, rejects, window_ns)
    why_exact = ""
    if columnar is not None:
        rt = InlineRuntime(
            instruments,
            cfg.strategy_specs(),
            cfg.risk,
            build_venue(cfg, instruments),
            columnar,
            max_ticks=events or cfg.backtest.events,
            exec_policy=cfg.exec,
            engine="fast",
            overlay=overlay if overlay.enabled else None,
            accounts=venue_accounts(cfg),
            risk_returns=cfg.backtest.risk_returns,
            **cfg.portfolio.backtest_kwargs(),
        )
        if rt.replay_engine == "fast":
            set_venue_fees(rt.host, cfg)
            return Backtest(rt, rejects, overlay)
        why_exact = rt.replay_note  # (the message path's own note would be "not columnar")
        rejects = RejectCounter(cfg.market.on_bad_row)  # the message path below, from scratch
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
        with_forecasts(cfg, market, overlay),
        exec_policy=cfg.exec,
        engine=cfg.backtest.engine,  # a message stream: the exact path whatever it says
        accounts=venue_accounts(cfg),
        risk_returns=cfg.backtest.risk_returns,
        **cfg.portfolio.backtest_kwargs(),
    )
    if columnar is not None:
        rt.replay_note = why_exact
    elif overlay.micro is not None and cfg.backtest.engine == "fast":
        rt.replay_note = "a micro model steps every message ([inference] micro_model_dir)"
    set_venue_fees(rt.host, cfg)
    return Backtest(rt, rejects, overlay)


def _columnar_market(cfg: Config, rejects: Any, window_ns: tuple[int, int] | None) -> Any:
    """The market as a columnar source for the fast replay, or None (``[backtest] engine =
    "exact"``, a synthetic market, scheduled halts, a source without a row form)."""
    from engine.md_columns import is_columnar
    from procs.build import build_exchange_rules, market_source, venue_configs

    if cfg.backtest.engine != "fast" or build_exchange_rules(cfg) is not None:
        return None
    if len(venue_configs(cfg, with_keys=False)) != 1 or cfg.market.source == "synthetic":
        return None
    try:
        src = market_source(cfg, rejects)
    except ValueError as exc:  # a replay file that is no such file at all
        raise MarketUnavailable(str(exc)) from None
    if not is_columnar(src) or not getattr(src, "columnar", True):
        return None
    if window_ns is None:
        return src
    if hasattr(src, "narrowed"):  # the catalog: pushed down, books opened at the window's start
        return src.narrowed(*window_ns)
    return _RowWindow(src, *window_ns)


class _RowWindow:
    """A columnar source cut to ``start <= ts_event < end`` (what ``_in_window`` does to the
    messages)."""

    def __init__(self, src: Any, start: int, end: int) -> None:
        self.src, self.start, self.end = src, start, end

    def preamble(self) -> list[Any]:
        return list(_in_window(self.src.preamble(), self.start, self.end))

    def batches(self) -> Iterator[Any]:
        for rows in self.src.batches():
            ts = rows["ts_event"]
            cut = rows[(ts >= self.start) & (ts < self.end)]
            if len(cut):
                yield cut
            if len(ts) and ts[-1] >= self.end:
                return

    def __iter__(self) -> Iterator[Any]:
        return _in_window(self.src, self.start, self.end)
