"""Engine components built from the config, the same way for both runtimes.

The multi-process runtime (``procs/*``) and the inline backtest (``gekko backtest``) must run the
*same* market, venue, strategies and limits for "same data + same strategy ⇒ same orders" to hold,
so both build them here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from types import MappingProxyType
from typing import Any

from engine.instruments import InstrumentTable
from engine.strategy_host import StrategyHost
from engine.venues.base import ExecutionClient
from engine.venues.data import MarketDataClient
from engine.venues.registry import VenueConfig

#: the validated configuration (``ops.config.Config``); procs sits below ops and only reads it
Config = Any

SECONDS_PER_YEAR = 252 * 6.5 * 3600  # trading seconds: annual vol is quoted over trading time


def build_market(
    cfg: Config, rejects: Any = None, instruments: InstrumentTable | None = None
) -> Iterator[Any]:
    """An iterator over ``market_source`` (the messages, in time order)."""
    return iter(market_source(cfg, rejects, instruments))


def market_source(
    cfg: Config, rejects: Any = None, instruments: InstrumentTable | None = None
) -> Any:
    """The market-data source: the seeded synthetic market, a replay of files or the catalog (the
    last two are columnar, ``engine.md_columns.is_columnar``: the fast replay takes them), of
    ``instruments`` (default: the simulator's, ``sim_instrument_table``).

    ``rejects`` (an ``engine.md_rejects.RejectCounter``) is told of every replayed row that is
    rejected; by default one with the policy of ``[market] on_bad_row``."""
    instruments = instruments or sim_instrument_table(cfg)
    m = cfg.market
    if m.source == "catalog":  # rows checked on import: nothing is rejected on the way out
        return build_catalog_source(cfg, instruments)
    if m.source == "replay":
        from engine.md_rejects import RejectCounter
        from engine.sources.replay import ReplaySource

        if rejects is None:
            rejects = RejectCounter(m.on_bad_row)

        if m.replay_lobster_messages:
            sym = m.replay_lobster_symbol or cfg.instruments[0].symbol
            ins = instruments.by_symbol(sym)
            # LOBSTER prices are dollars x 10000: one tick is tick_size x 10000 of them
            divisor = round(ins.tick_size * 10_000) if ins.tick_size else 100
            if divisor < 1 or abs(divisor - ins.tick_size * 10_000) > 1e-6:
                raise ValueError(f"{sym}: tick_size {ins.tick_size} is no multiple of $0.0001")
            return ReplaySource.from_lobster(
                m.replay_lobster_messages,
                m.replay_lobster_orderbook,
                m.replay_lobster_levels,
                ins.instrument_id,
                price_divisor=divisor,
                instruments=instruments,
                rejects=rejects,
            )
        return ReplaySource(
            instruments,
            quotes=m.replay_quotes or None,
            trades=m.replay_trades or None,
            rejects=rejects,
        )
    from engine.sources.synthetic import InstrumentSpec, JumpParams, SyntheticMarket

    specs = [
        InstrumentSpec.from_instrument(
            instruments.by_id(i.instrument_id), i.initial_price, annual_vol=i.annual_vol
        )
        for i in cfg.instruments
        if i.instrument_id in instruments
    ]
    jumps = (
        JumpParams(rate_per_s=m.jump_rate_per_s, std=m.jump_std) if m.jump_rate_per_s > 0 else None
    )
    market = SyntheticMarket(
        specs,
        correlation=m.correlation,
        seed=m.seed,
        mean_interval_ns=int(m.event_interval_us * 1000),
        levels=m.book_levels,
        jumps=jumps,
    )
    return market


def build_catalog_source(cfg: Config, instruments: InstrumentTable | None = None) -> Any:
    """``[market] source = "catalog"``: the catalog's rows of ``instruments`` (default: the
    simulator's) in ``[catalog_start, catalog_end)`` as an ``engine.catalog_read.CatalogSource``
    (a columnar source: the fast replay reads its batches, everything else its messages)."""
    from engine.catalog_read import CatalogSource

    m = cfg.market
    start, end = m.catalog_window()
    return CatalogSource(
        m.catalog_dir,
        instruments or sim_instrument_table(cfg),
        venue=m.catalog_venue,
        start_ns=start,
        end_ns=end,
    )


def build_exchange_rules(cfg: Config) -> Any:
    """The simulated exchange's halts and circuit breaker from ``[sim]`` (None when it has
    neither: the market stream passes unchanged)."""
    s = cfg.sim
    if not s.halts and not s.circuit_breaker_pct > 0:
        return None
    from engine.sources.halts import VENUE_WIDE, ExchangeRules, ScheduledHalt

    ids = {i.symbol: i.instrument_id for i in cfg.instruments}
    halts = [
        ScheduledHalt(
            VENUE_WIDE if h.instrument == "*" else ids[h.instrument],
            int(h.at_s * 1e9),
            int(h.duration_s * 1e9),
            h.reason,
        )
        for h in s.halts
    ]
    return ExchangeRules(
        ids.values(),
        halts,
        breaker_pct=s.circuit_breaker_pct,
        breaker_window_ns=int(s.circuit_breaker_window_s * 1e9),
        breaker_halt_ns=int(s.circuit_breaker_halt_s * 1e9),
    )


def with_exchange_status(cfg: Config, source: Iterator[Any], rules: Any = None) -> Iterator[Any]:
    """``source`` with the venue's ``ExchangeStatus`` messages where they take effect (both
    runtimes wrap their market this way, so they halt at the same market times)."""
    from engine.sources.halts import with_exchange_status as wrap

    rules = rules if rules is not None else build_exchange_rules(cfg)
    return source if rules is None else wrap(source, rules)  # nothing configured: no extra hop


def real_venue_names(cfg: Config) -> set[str]:
    """The names of the ``[[venues]]`` entries that are real exchanges (not ``kind = "sim"``)."""
    return {v.name for v in getattr(cfg, "venues", None) or [] if v.kind != "sim"}


def sim_instrument_table(
    cfg: Config, instruments: InstrumentTable | None = None
) -> InstrumentTable:
    """The instruments the simulator trades: all but those of a real venue (their market is
    the venue's own: the synthetic market and the simulated venues leave them alone)."""
    table = instruments or cfg.instrument_table()
    real = real_venue_names(cfg)
    if not real:
        return table
    return InstrumentTable([i for i in table if i.venue not in real])


def real_venue_instrument_ids(cfg: Config) -> list[int]:
    """The instruments of real venues: risk limits their positions in notional
    (``[risk] max_position_notional``), their lot being the venue's quantity step."""
    real = real_venue_names(cfg)
    return [i.instrument_id for i in cfg.instruments if i.venue in real]


def hedging_instrument_ids(cfg: Config) -> list[int]:
    """The instruments of venues whose account hedges (``position_mode = "hedging"``: only
    simulated venues do, ops/account_config.py): risk keeps their long and short legs apart."""
    venues = getattr(cfg, "venues", None)
    if not venues:
        hedges = getattr(cfg.sim, "position_mode", "netting") == "hedging"
        return [i.instrument_id for i in cfg.instruments] if hedges else []
    names = {v.name for v in venues if getattr(v, "position_mode", "netting") == "hedging"}
    return [i.instrument_id for i in cfg.instruments if i.venue in names]


def venue_configs(
    cfg: Config,
    instruments: InstrumentTable | None = None,
    record_path: Any = None,
    with_keys: bool = True,
) -> list[VenueConfig]:
    """One ``engine.venues.registry.VenueConfig`` per ``[[venues]]`` entry (seeds ``seed``,
    ``seed + 1``, ...; no durable record: after an exec crash they start empty), or the one
    simulated venue of ``[sim]`` with ``record_path`` (live runs: it outlives an exec crash the
    way a real venue would). Every simulated venue serves the configured market."""
    table = instruments or cfg.instrument_table()
    market = partial(_market_stream, cfg)
    # a simulated venue's account starts with the portfolio's cash (engine.venues.sim_accounts)
    balance = {"balance": dict(cfg.portfolio.cash)}
    if not getattr(cfg, "venues", None):
        settings = cfg.sim.venue_settings() | balance
        return [VenueConfig("sim", "sim", table, settings, cfg.market.seed, record_path, market)]
    if len(cfg.venues) == 1 and cfg.venues[0].kind != "sim":
        return [_real_venue_config(cfg, cfg.venues[0], table, record_path, with_keys=with_keys)]
    sims = sim_instrument_table(cfg, table)  # a simulated venue beside real ones: not theirs
    return [
        VenueConfig(
            v.name, v.kind, sims, v.venue_settings() | balance, cfg.market.seed + k, None, market
        )
        if v.kind == "sim"
        else _real_venue_config(cfg, v, table, None, cfg.market.seed + k, with_keys)
        for k, v in enumerate(cfg.venues)
    ]


def venue_accounts(cfg: Config) -> dict[str, Any]:
    """Each venue's account as the portfolio books it (``engine.accounts.Account``: its kind,
    position mode, leverage cap and a betting exchange's commission), by venue name."""
    from engine.accounts import Account

    out: dict[str, Any] = {}
    for c in venue_configs(cfg, with_keys=False):
        s = c.settings
        out[c.name] = Account(
            kind=s.get("account", "cash"),
            position_mode=s.get("position_mode", "netting"),
            leverage=float(s.get("leverage", 0.0)),
            commission=float(s.get("commission_pct", 0.0)) / 100.0,
        )
    return out


def _real_venue_config(
    cfg: Config,
    v: Any,
    table: InstrumentTable,
    record_path: Any,
    seed: int | None = None,
    with_keys: bool = True,
) -> VenueConfig:
    """A real venue (``engine.venues.ccxt_kinds``): its markets and whether it trades live, as
    the run's pre-flight decided (``cfg.resolved``, ops/venue_run.py), and its keys when live.
    Paper on its own: the simulated exchange keeps a durable record like ``[sim]``'s."""
    live = v.name in cfg.resolved.live
    settings = v.venue_settings() | {
        "live": live,
        "markets": cfg.resolved.markets.get(v.name, {}),
        # our client order ids carry the engine's prefix: two engines on one account never
        # claim each other's orders (engine.venues.ccxt_orders.order_prefix)
        "engine_id": cfg.engine.id,
        # paper on a margin account (OANDA): the simulated account starts with the portfolio's
        # cash (engine.venues.sim_accounts)
        "balance": dict(cfg.portfolio.cash),
    }
    # the keys: exec's alone (the feed's market data is public: it never loads them), and a
    # kind's whose prices need them (``private_data``: OANDA), paper too
    from engine.venues.registry import lookup

    private = lookup(v.kind).private_data
    creds = cfg.venue_credentials(v.name) if (live or private) and with_keys else None
    seed = cfg.market.seed if seed is None else seed
    return VenueConfig(
        v.name, v.kind, table, settings, seed, None if live else record_path, credentials=creds
    )


def build_venue(
    cfg: Config, instruments: InstrumentTable | None = None, record_path: Any = None
) -> ExecutionClient:
    """The execution client of the configured venue, built by its kind's factory
    (``engine.venues.registry``); several ``[[venues]]`` go behind a smart router
    (``engine.routing.SmartRouter``). An unknown kind raises ``UnknownVenueKind``."""
    from engine.venues.reconciled import wrap_live
    from engine.venues.registry import lookup

    # a live client goes behind reconciliation and its state gate (engine.venues.reconciled)
    clients = {
        c.name: wrap_live(lookup(c.kind).execution(c), c)
        for c in venue_configs(cfg, instruments, record_path)
    }
    if len(clients) == 1:
        return next(iter(clients.values()))
    from engine.routing import SmartRouter

    return SmartRouter(clients, instruments=instruments)


def build_data_client(cfg: Config, rejects: Any = None, rules: Any = None) -> MarketDataClient:
    """The market-data client the feed reads: the simulated venue's own when it is the only
    one; otherwise an ``engine.venues.merged_data.MergedDataClient`` over every real venue's
    client (one alone too: it halts the venue's instruments while its data is down) and the
    simulated market (simulated venues share one: ``build_market`` with the exchange status of
    ``[sim]``, over the instruments no real venue trades; ``rejects``, ``rules``: as
    ``build_market`` and ``with_exchange_status`` take them)."""
    from dataclasses import replace

    from engine.venues.registry import lookup

    clients: list[MarketDataClient] = []
    sim_done = False
    for c in venue_configs(cfg, with_keys=False):  # market data is public: no keys
        if c.kind == "sim":
            if sim_done or not len(c.instruments):
                continue  # one simulated market serves every simulated venue
            sim_done = True
            c = replace(c, market=partial(_market_stream, cfg, rejects, rules))
        kind = lookup(c.kind)
        if kind.private_data:  # its prices need the account's keys (OANDA)
            c = replace(c, credentials=cfg.venue_credentials(c.name))
        clients.append(kind.market_data(c))
    from engine.venues.data import is_live
    from engine.venues.merged_data import MergedDataClient

    if len(clients) == 1 and not is_live(clients[0]):
        return clients[0]
    # a live venue, even alone, goes through the merging client: its instruments halt while its
    # market data is down (fail closed: the simulated exchange must not match a stale book)

    return MergedDataClient(clients, cfg.market.rate_hz)


def _market_stream(cfg: Config, rejects: Any = None, rules: Any = None) -> Iterator[Any]:
    return with_exchange_status(cfg, build_market(cfg, rejects), rules)


def venue_record_path(cfg: Config, run_id: int) -> Any:
    """Where the simulated venue of run ``run_id`` keeps its record (None outside a run)."""
    from pathlib import Path

    if not run_id:
        return None
    return Path(cfg.engine.var_dir) / "venue" / f"sim-{cfg.engine.id}-{run_id}.venue"


def build_strategy_host(cfg: Config, instruments: InstrumentTable | None = None) -> StrategyHost:
    host = StrategyHost(cfg.strategy_specs(), instruments or cfg.instrument_table())
    # sizing is capped by the risk limits (a real venue's positions in notional), with risk's sigma
    host.set_risk_limits(cfg.risk, real_venue_instrument_ids(cfg))
    host.set_hedged(hedging_instrument_ids(cfg))  # their contexts keep a long and a short leg
    set_venue_fees(host, cfg)
    return host


def set_venue_fees(host: StrategyHost, cfg: Config) -> None:
    """Tell every strategy context each instrument's taker fee at its venue
    (``StrategyContext.taker_fees_bps``): a cost-aware strategy prices its trades with it."""
    fees: dict[int, float] = {}
    for c in venue_configs(cfg, with_keys=False):
        fee = c.settings.get("taker_fee_bps")
        if fee is not None:
            for ins in c.instruments:
                fees.setdefault(ins.instrument_id, float(fee))
    view = MappingProxyType(fees)
    for slot in host.slots:
        slot.ctx.taker_fees_bps = view
