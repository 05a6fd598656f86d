"""The run's record (what the supervisor saw on the rings) and how it is shown to a trader.

The supervisor reads the orders, events and risk rings as a gating reader, so its record holds
every order and every fill; the summary checks the positions exec reports against the sum of
signed fills, which is the consistency a trader cares about first.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from engine.analytics import YEAR_NS, format_duration, summarize
from engine.messages import (
    ACCOUNT_EVENT_TYPES,
    CancelOrder,
    Forecast,
    InstrumentHalted,
    InstrumentResumed,
    ModelSwapped,
    NewOrder,
    OrderAccepted,
    OrderCanceled,
    OrderCancelRejected,
    OrderPartiallyFilled,
    OrderRejected,
    OrderReplaceRejected,
    ReplaceOrder,
    RiskEvent,
    RiskEventKind,
)
from engine.portfolio import Portfolio
from engine.venues.ccxt_markets import RULES_PREFIX
from ops.report_accounts import AccountTally, format_account
from procs.build import venue_accounts
from shm.metrics import MetricsRegion, merge_snapshots
from shm.seqlock import SeqlockTable

TARGET_T2O_US = 50.0
MAX_T2O_US = 100.0


class RunRecord:
    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.symbols = {i.instrument_id: i.symbol for i in cfg.instruments}
        self.orders: list[Any] = []
        self.fills: list[Any] = []
        self.new_orders = 0
        self.cancels = 0
        self.replaces = 0
        self.accepted = 0
        self.canceled = 0
        self.venue_rejects = 0  # every refusal on the events ring, of orders and of requests
        #: the last refusals, ("risk" | "venue", message), for `gekko top` (ops/activity.py)
        self.recent_rejects: deque[tuple[str, Any]] = deque(maxlen=64)
        self.cancel_rejects = 0  # of which refused cancels (the order was unchanged)
        self.replace_rejects = 0  # and refused replaces
        self.risk_rejects = 0
        self.risk_rejects_by_reason: dict[str, int] = {}  # every refusal risk recorded
        #: new orders refused before they left because a real venue's rules would refuse them
        self.venue_rules_rejects_by_reason: dict[str, int] = {}
        self.risk_events: list[RiskEvent] = []
        self.halts: list[InstrumentHalted | InstrumentResumed] = []
        self.fill_position: dict[int, int] = {i: 0 for i in self.symbols}
        # labelled counts for the Prometheus exporter (ops/exporter.py reads copies of them)
        self.orders_by: dict[tuple[str, int, int, int], int] = {}  # (action, type, strategy, iid)
        self.fills_by: dict[tuple[int, int], int] = {}  # (strategy, iid)
        self.venue_rejects_by: dict[tuple[int, str], int] = {}  # (iid, reason word)
        #: the model infer serves and when its last forecast was published (monotonic ns)
        self.model: dict[str, Any] = {}
        self.restarts: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.t_stop: float | None = None  # when the run stopped trading (``stopping``)
        self._last_ticks = 0
        self._last_t = self.t0
        # the account as the record sees it: every order and fill, marked from exec's positions
        # table; its equity curve (sampled every [portfolio] equity_interval_s) gives analytics
        pcfg = getattr(cfg, "portfolio", None)
        self.portfolio = Portfolio(
            cfg.instrument_table(),
            **(pcfg.portfolio_kwargs() if pcfg is not None else {}),
            benchmark=self._benchmark_id(pcfg),
            accounts=venue_accounts(cfg),  # each venue's account, as exec's portfolio books it
        )
        self.sample_interval_ns = int((pcfg.equity_interval_s if pcfg is not None else 1.0) * 1e9)
        # funding, financing, settlements, liquidations, margin (ops/report_accounts.py)
        self.accounts = AccountTally(
            {i.instrument_id: i.currency for i in cfg.instruments},
            getattr(pcfg, "fx_rates", None) or {},
            [i.instrument_id for i in cfg.instruments if i.kind == "betting"],
        )
        self._next_sample_ns = 0

    def _benchmark_id(self, pcfg: Any) -> int | None:
        sym = getattr(pcfg, "benchmark", "") if pcfg is not None else ""
        return next((iid for iid, s in self.symbols.items() if s == sym), None) if sym else None

    def maybe_sample(self, positions: SeqlockTable | None, force: bool = False) -> None:
        """Mark the record's portfolio from the positions table and add an equity-curve point,
        when one is due (cheap to call often: it reads the table only then)."""
        now = time.monotonic_ns()
        if positions is None or (not force and now < self._next_sample_ns):
            return
        self._next_sample_ns = now + self.sample_interval_ns
        for row in positions.read_all():
            self.portfolio.mark(int(row["instrument_id"]), int(row["mark_px"]))
        self.portfolio.sample(now)

    def analytics(self) -> dict[str, Any]:
        pcfg = getattr(self.cfg, "portfolio", None)
        ts, eq, bench = self.portfolio.equity_curve()
        return summarize(
            ts,
            eq,
            bench if self.portfolio.benchmark is not None else None,
            risk_free=pcfg.risk_free_rate if pcfg is not None else 0.0,
            var_level=pcfg.var_level if pcfg is not None else 0.95,
            periods_per_year=YEAR_NS / self.sample_interval_ns,
        )

    def start(self) -> None:
        self.t0 = self._last_t = time.monotonic()

    def stopping(self) -> None:
        """The run stops trading now: ``trading_s`` in the summary ends here (the workers'
        shutdown, seconds under load, is in ``elapsed_s`` only)."""
        self.t_stop = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def on_order(self, msg: Any) -> None:
        self.orders.append(msg)
        self.portfolio.on_order(msg)
        _count(self.orders_by, _order_key(msg))
        if isinstance(msg, NewOrder):
            self.new_orders += 1
            if msg.lots:  # the lots its strategy named, as exec's portfolio applies them
                self.portfolio.designate_lots(msg.client_order_id, msg.lots)
        elif isinstance(msg, CancelOrder):
            self.cancels += 1
        elif isinstance(msg, ReplaceOrder):
            self.replaces += 1

    def on_event(self, msg: Any) -> None:
        if isinstance(msg, ACCOUNT_EVENT_TYPES):
            # a settlement or liquidation moves a position as the portfolio books it (settled:
            # flat, a betting selection's too; engine/account_events.py)
            iid = getattr(msg, "instrument_id", None)
            before = self.portfolio.position(iid) if iid in self.fill_position else 0
            self.portfolio.on_event(msg)
            self.accounts.on_event(msg)
            if iid in self.fill_position:
                moved = self.portfolio.position(iid) - before
                self.fill_position[iid] += moved
            return
        self.portfolio.on_event(msg)
        if isinstance(msg, OrderPartiallyFilled):  # OrderFilled is a subclass
            self.fills.append(msg)
            # the id's top 32 bits are its strategy's (engine/strategy_host.py)
            _count(self.fills_by, (msg.client_order_id >> 32, msg.instrument_id))
            self.fill_position[msg.instrument_id] = (
                self.fill_position.get(msg.instrument_id, 0) + msg.side * msg.fill_qty
            )
        elif isinstance(msg, OrderAccepted):
            self.accepted += 1
        elif isinstance(msg, OrderCanceled):
            self.canceled += 1
        elif isinstance(msg, OrderRejected):
            self.venue_rejects += 1
            _count(self.venue_rejects_by, (msg.instrument_id, reason_word(msg.reason)))
            self.recent_rejects.append(("venue", msg))
            if msg.reason.startswith(RULES_PREFIX):  # "venue rules: min_notional: ..."
                why = msg.reason[len(RULES_PREFIX) :].split(":", 1)[0]
                by = self.venue_rules_rejects_by_reason
                by[why] = by.get(why, 0) + 1
        elif isinstance(msg, OrderCancelRejected):
            self.venue_rejects += 1
            self.cancel_rejects += 1
            _count(self.venue_rejects_by, (msg.instrument_id, "cancel_rejected"))
            self.recent_rejects.append(("venue", msg))
        elif isinstance(msg, OrderReplaceRejected):
            self.venue_rejects += 1
            self.replace_rejects += 1
            _count(self.venue_rejects_by, (msg.instrument_id, "replace_rejected"))
            self.recent_rejects.append(("venue", msg))

    def on_forecast(self, msg: Any) -> None:
        """The forecasts ring (read non-gating): the model served, the last forecast's time.
        The bar model's: a micro model's forecasts (``p_up`` >= 0) and swaps (model_name
        "micro") beside it are not what these figures describe."""
        if isinstance(msg, Forecast):
            if msg.p_up >= 0:
                return
            self.model["last_forecast_ns"] = msg.ts_recv
            self.model.setdefault("version", msg.model_version)
        elif isinstance(msg, ModelSwapped) and msg.model_name != "micro":
            self.model.update(name=msg.model_name, version=msg.new_version)

    def on_risk(self, msg: Any) -> None:
        if isinstance(msg, OrderRejected):
            self.risk_rejects += 1
            self.recent_rejects.append(("risk", msg))
        elif isinstance(msg, RiskEvent):
            self.risk_events.append(msg)
            self.accounts.on_risk(msg)
            if msg.kind == RiskEventKind.ORDER_REJECTED:  # (a refused replace has no reject)
                why = msg.reason.split(":", 1)[0]  # "instrument halted: <why>" -> its kind
                self.risk_rejects_by_reason[why] = self.risk_rejects_by_reason.get(why, 0) + 1
        elif isinstance(msg, InstrumentHalted | InstrumentResumed):
            self.halts.append(msg)  # venue halts, exchange breakers, flash moves (risk.jsonl)

    # --- views ---------------------------------------------------------------------------------
    def latency(self, metrics: dict[str, MetricsRegion]) -> dict[str, float]:
        if "exec" not in metrics:
            return {}
        snap = merge_snapshots([metrics["exec"].snapshots()["tick_to_order_ns"]])
        return {k: v for k, v in snap.summary().items()}

    def summary(
        self, metrics: dict[str, MetricsRegion], positions: SeqlockTable | None
    ) -> dict[str, Any]:
        counters = {w: m.counters() for w, m in metrics.items()}
        self.maybe_sample(positions, force=True)  # the closing point of the equity curve
        table = positions.read_all() if positions is not None else []
        per: dict[str, Any] = {}
        for row in table:
            iid = int(row["instrument_id"])
            sym = self.symbols.get(iid, str(iid))
            per[sym] = {
                "instrument_id": iid,
                "position": int(row["position"]),
                "position_from_fills": self.fill_position.get(iid, 0),
                "fills": int(row["fills"]),
                "avg_px": float(row["avg_px"]),
                "realized": float(row["realized"]),
                "unrealized": float(row["unrealized"]),
                "fees": float(row["fees"]),
            }
        lat = self.latency(metrics)
        stages = {}
        for worker, hist in (
            ("strategy", "tick_to_intent_ns"),
            ("risk", "tick_to_approval_ns"),
            ("exec", "tick_to_order_ns"),
        ):
            if worker in metrics:
                stages[hist] = metrics[worker].snapshots()[hist].summary()
        fills_by_instrument: dict[str, int] = {}
        for f in self.fills:
            s = self.symbols.get(f.instrument_id, str(f.instrument_id))
            fills_by_instrument[s] = fills_by_instrument.get(s, 0) + 1
        return {
            "engine_id": self.cfg.engine.id,
            "elapsed_s": round(self.elapsed(), 3),
            "trading_s": round((self.t_stop or time.monotonic()) - self.t0, 3),
            "ticks": counters.get("feed", {}).get("md_out", 0),
            "md_rejected": counters.get("feed", {}).get("md_rejected", 0),
            "md_rejected_by_reason": md_rejected_by_reason(counters.get("feed", {})),
            "intents": counters.get("strategy", {}).get("intents_out", 0),
            "orders_new": self.new_orders,
            "orders_cancel": self.cancels,
            "orders_replace": self.replaces,
            "accepted": self.accepted,
            "canceled": self.canceled,
            "fills": len(self.fills),
            "risk_rejects": self.risk_rejects,
            "risk_rejects_by_reason": dict(self.risk_rejects_by_reason),
            "venue_rules_rejects_by_reason": dict(self.venue_rules_rejects_by_reason),
            "stale_orders": counters.get("exec", {}).get("stale_orders", 0),
            "venue_rejects": self.venue_rejects,
            "cancel_rejects": self.cancel_rejects,
            "replace_rejects": self.replace_rejects,
            "risk_events": len(self.risk_events),
            "positions": per,
            "fills_by_instrument": fills_by_instrument,
            "consistent": all(v["position"] == v["position_from_fills"] for v in per.values()),
            "realized": sum(v["realized"] for v in per.values()),
            "unrealized": sum(v["unrealized"] for v in per.values()),
            "fees": sum(v["fees"] for v in per.values()),
            **self.accounts.summary(),  # funding, financing, commission and "account"
            "tick_to_order_ns": lat,
            "latency_stages": stages,
            "restarts": self.restarts,
            "counters": counters,
            "portfolio": self.portfolio.summary(),
            "pnl_by_strategy": self.portfolio.strategy_pnl(),
            "analytics": self.analytics(),
        }


def _count(d: dict[Any, int], key: Any) -> None:
    d[key] = d.get(key, 0) + 1


def _order_key(msg: Any) -> tuple[str, int, int, int]:
    """(action, order type (0: not a new order), strategy id, instrument id) of an order."""
    action = {NewOrder: "new", CancelOrder: "cancel", ReplaceOrder: "replace"}.get(type(msg), "")
    otype = int(msg.order_type) if action == "new" else 0
    sid, iid = getattr(msg, "strategy_id", 0), getattr(msg, "instrument_id", -1)
    return action or type(msg).__name__.lower(), otype, int(sid), int(iid)


def reason_word(reason: str) -> str:
    """A refusal's reason as a short label: its first clause, lower case, ``_`` for blanks
    ("venue rules: min_notional: ..." -> "rules_min_notional"; free text stays bounded)."""
    if reason.startswith(RULES_PREFIX):
        head = "rules " + reason[len(RULES_PREFIX) :].split(":", 1)[0]
    else:
        head = reason.split(":", 1)[0]
    word = "".join(c if c.isalnum() else "_" for c in head.strip().lower())[:40].strip("_")
    return word or "unknown"


#: ``gekko run``'s exit code when the run cannot be trusted: at the end, exec's positions
#: disagree with the fills the engine published (``inconsistency``)
UNTRUSTED_EXIT = 3


def inconsistency(s: dict[str, Any]) -> str:
    """Why the run's positions cannot be trusted ("" when they can): each instrument whose
    position in exec's table differs from the sum of the fills the engine published."""
    bad = [
        f"{sym} {v['position']:+d} in exec vs {v['position_from_fills']:+d} from fills"
        for sym, v in (s.get("positions") or {}).items()
        if v["position"] != v["position_from_fills"]
    ]
    return "positions inconsistent with fills: " + ", ".join(bad) if bad else ""


def md_rejected_by_reason(feed_counters: dict[str, int]) -> dict[str, int]:
    """The feed's ``md_rej_<reason>`` counters that are not zero, as ``{reason: count}``."""
    pre = "md_rej_"
    return {k[len(pre) :]: v for k, v in feed_counters.items() if k.startswith(pre) and v}


def format_md_rejected(s: dict[str, Any]) -> list[str]:
    """The summary line of rejected market data (none when nothing was rejected)."""
    total = int(s.get("md_rejected") or 0)
    if not total:
        return []
    why = ", ".join(f"{k} {v}" for k, v in sorted((s.get("md_rejected_by_reason") or {}).items()))
    return [f"  market data rejected: {total} ({why})"]


def format_rejects(s: dict[str, Any]) -> list[str]:
    """Risk's refusals by reason (``stale_intent``: built on data older than ``[risk]
    max_intent_age_ms``) and the new orders exec refused as stale; none when there were none."""
    by = s.get("risk_rejects_by_reason") or {}
    stale = int(s.get("stale_orders") or 0)
    out = []
    if by:
        why = ", ".join(f"{k} {v}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
        out.append(f"  risk refusals by reason: {why}")
        if "replace of unknown order" in by:  # in most runs: say it is not a fault
            out.append(
                "    (replace of unknown order: its order had filled, been canceled or refused"
                " by the time the replace reached risk; nothing was sent: a race, not a fault)"
            )
    if stale:
        out.append(
            f"  exec refused {stale} new orders as stale_order (older than max_intent_age_ms)"
        )
    rules = s.get("venue_rules_rejects_by_reason") or {}
    if rules:
        why = ", ".join(f"{k} {v}" for k, v in sorted(rules.items(), key=lambda kv: -kv[1]))
        out.append(f"  refused before the venue would have (its rules): {why}")
    return out


def _ran(s: dict[str, Any]) -> str:
    """``20.0s trading (+9.3s to stop)``: a --duration 20 run does not read as 29.3 s."""
    total = float(s.get("elapsed_s", 0) or 0)
    trading = s.get("trading_s")
    if trading is None or total - float(trading) < 0.05:
        return f"{total:.1f}s"
    return f"{float(trading):.1f}s trading (+{total - float(trading):.1f}s to stop)"


def _us(ns: float) -> str:
    """A latency as a person reads it: µs under 10 ms (the target's scale), then ms, then s."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    us = ns / 1000
    if us < 10_000:
        return f"{us:.0f}µs"
    return f"{us / 1000:.1f}ms" if us < 1_000_000 else f"{us / 1e6:.2f}s"


def format_status(
    record: RunRecord, metrics: dict[str, MetricsRegion], positions: SeqlockTable, cfg: Any
) -> str:
    now = time.monotonic()
    ticks = metrics["feed"].counters()["md_out"]
    rate = (ticks - record._last_ticks) / max(now - record._last_t, 1e-9)
    record._last_ticks, record._last_t = ticks, now
    table = positions.read_all()
    pos = " ".join(
        f"{record.symbols.get(int(r['instrument_id']), '?')}:{int(r['position']):+d}" for r in table
    )
    acct = record.accounts
    pnl = acct.in_base("funding") + acct.in_base("financing") - acct.in_base("commission")
    pnl += float(
        sum(float(r["realized"]) + float(r["unrealized"]) - float(r["fees"]) for r in table)
    )
    lat = record.latency(metrics)
    return (
        f"[{record.elapsed():6.1f}s] ticks/s {rate:8.0f}  orders {record.new_orders:6d}  fills {len(record.fills):6d}  "
        f"pos {pos}  pnl {pnl:+.2f}  t2o p50 {_us(lat.get('p50', float('nan')))} p99 {_us(lat.get('p99', float('nan')))}"
    )


def format_summary(s: dict[str, Any], cfg: Any) -> str:
    lines = []
    lines.append("")
    lines.append(
        f"Gekko run summary — engine {s.get('engine_id')}, {_ran(s)}, stopped: {s.get('stop_reason', '')}"
    )
    lines.append(
        f"  ticks {s.get('ticks', 0)}   intents {s.get('intents', 0)}   orders new/cancel/replace "
        f"{s.get('orders_new', 0)}/{s.get('orders_cancel', 0)}/{s.get('orders_replace', 0)}   fills {s.get('fills', 0)}   "
        f"rejects risk/venue {s.get('risk_rejects', 0)}/{s.get('venue_rejects', 0)} "
        f"(refused cancels/replaces {s.get('cancel_rejects', 0)}/{s.get('replace_rejects', 0)})"
    )
    lines += format_md_rejected(s)
    lines += format_rejects(s)
    lines.append(
        f"  {'instrument':<10} {'position':>9} {'from fills':>10} {'fills':>6} {'avg px':>10} {'realized':>11} {'unrealized':>11} {'fees':>9}"
    )
    for sym, v in s.get("positions", {}).items():
        ins = next((i for i in cfg.instruments if i.symbol == sym), None)
        tick = ins.tick_size if ins else 1.0
        lines.append(
            f"  {sym:<10} {v['position']:>9d} {v['position_from_fills']:>10d} {v['fills']:>6d} "
            f"{v['avg_px'] * tick:>10.2f} {v['realized']:>11.2f} {v['unrealized']:>11.2f} {v['fees']:>9.2f}"
        )
    lines += format_pnl(s)
    lines += format_account(s)
    lat = s.get("tick_to_order_ns") or {}
    if lat:
        lines.append(
            f"  tick-to-order: p50 {_us(lat.get('p50'))}  p90 {_us(lat.get('p90'))}  p99 {_us(lat.get('p99'))}  "
            f"max {_us(lat.get('max'))}  (target {TARGET_T2O_US:.0f}µs, max {MAX_T2O_US:.0f}µs; n={int(lat.get('count', 0))})"
        )
        lines += latency_note(lat.get("p50"), cfg)
    stages = s.get("latency_stages") or {}
    if stages:
        lines.append(
            "  stages (p50/p99 since the tick): "
            + "  ".join(
                f"{k.replace('_ns', '')} {_us(v.get('p50'))}/{_us(v.get('p99'))}"
                for k, v in stages.items()
            )
        )
    if s.get("restarts"):
        lines.append(
            f"  restarts: {', '.join(r['worker'] + ' (' + r['reason'] + ')' for r in s['restarts'])}"
        )
    lines += format_analytics(s.get("analytics") or {}, s.get("pnl_by_strategy") or {}, cfg)
    lines.append(f"  positions consistent with fills: {'yes' if s.get('consistent') else 'NO'}")
    if s.get("failure"):
        lines.append(f"  FAILED (exit code {s.get('exit_code')}): {s['failure']}")
    return "\n".join(lines)


def net_pnl(s: dict[str, Any]) -> float:
    """realized + unrealized − fees + funding + financing − commission (account currency)."""
    g = s.get
    return (
        g("realized", 0)
        + g("unrealized", 0)
        - g("fees", 0)
        + (g("funding") or 0)
        + (g("financing") or 0)
        - (g("commission") or 0)
    )


def format_pnl(s: dict[str, Any]) -> list[str]:
    """The P&L line: each component apart (funding, financing and commission where a run had
    them), and the net."""
    parts = [f"realized {s.get('realized', 0):.2f}", f"unrealized {s.get('unrealized', 0):.2f}"]
    parts.append(f"fees {s.get('fees', 0):.2f}")
    for k in ("funding", "financing"):
        if s.get(k):
            parts.append(f"{k} {s[k]:+.2f}")
    if s.get("commission"):
        parts.append(f"commission {s['commission']:.2f}")
    return [f"  P&L: {'  '.join(parts)}  net {net_pnl(s):+.2f}"]


#: the workers on the tick-to-order path: what a free core each would change
HOT_PATH = ("feed", "strategy", "risk", "exec")


def latency_note(p50_ns: Any, cfg: Any) -> list[str]:
    """One line saying why tick-to-order is above target when it is, so a figure 10x the
    target is not left unexplained: this host's cores against the processes, pinning, waits."""
    if p50_ns is None or math.isnan(p50_ns) or p50_ns / 1000 <= TARGET_T2O_US:
        return []
    from ops.preflight import available_cpus
    from procs.runtime import enabled_workers

    n = len(enabled_workers(cfg)) + 1  # and the supervisor
    cores = len(available_cpus())
    procs = [getattr(cfg.processes, w) for w in HOT_PATH]
    pinned = sum(1 for p in procs if p.cpus)
    waits = sorted({p.wait or "block" for p in procs})
    why = [f"{n} processes share {cores} cores" if cores < n else f"{cores} cores"]
    why.append("not pinned" if not pinned else f"{pinned} of 4 trading workers pinned")
    why.append(f"wait={'/'.join(waits)}")
    return [
        f"  above target: {', '.join(why)}; even pinned on free cores, three Python hops"
        " take ~100µs: docs/performance.md"
    ]


def _fig(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.2f}%" if pct else f"{v:.2f}"


def _small_pct(v: Any) -> str:
    """A percentage that may be tiny (one short sample period's VaR): three significant digits."""
    # + 0.0: a zero that summed as -0.0 (the report rebuilt from the record) reads as 0%
    return "-" if v is None else f"{v * 100 + 0.0:.3g}%"


def format_analytics(a: dict[str, Any], by_strategy: dict[Any, Any], cfg: Any = None) -> list[str]:
    """Report lines: the equity-curve analytics and the P&L attributed to each strategy.

    Over-the-run figures (return, drawdown, VaR/ES per sample period, beta) are always shown;
    the annualised ones only when the curve was long enough to annualise
    (``engine.analytics.annualisable``) — a 10-second run's "Sharpe -16242" is noise, not news.
    """
    lines: list[str] = []
    if a.get("points"):
        period = a.get("sample_period_s")
        per = f" per {format_duration(period)} sample" if period else ""
        span = a.get("span_s")
        over = f" over {format_duration(span)}" if span else ""
        lines.append(
            f"  performance ({a['points']} equity points{over}): "
            f"return {_fig(a.get('total_return'), True)}  "
            f"max DD {_fig(a.get('max_drawdown'), True)}  "
            f"VaR/ES {a.get('var_level', 0.95):.0%}{per} "
            f"{_small_pct(a.get('var'))}/{_small_pct(a.get('expected_shortfall'))}"
        )
        if a.get("annualised", True):
            lines.append(
                f"  annualised: return {_fig(a.get('annualized_return'), True)}  "
                f"volatility {_fig(a.get('volatility'), True)}  Sharpe {_fig(a.get('sharpe'))}  "
                f"Sortino {_fig(a.get('sortino'))}  Calmar {_fig(a.get('calmar'))}"
            )
        else:
            why = a.get("annualise_note") or "run too short to annualise"
            lines.append(f"  annualised (return, volatility, Sharpe, Sortino, Calmar): n/a ({why})")
        if a.get("beta") is not None or a.get("excess_total_return") is not None:
            bench = getattr(getattr(cfg, "portfolio", None), "benchmark", "") or "benchmark"
            rel = (
                f"alpha {_fig(a.get('alpha'), True)}  "
                f"excess return {_fig(a.get('excess_return'), True)} annualised  "
                f"information ratio {_fig(a.get('information_ratio'))}"
                if a.get("annualised", True)
                else "alpha, annualised excess return, information ratio n/a"
            )
            lines.append(
                f"  vs {bench}: beta {_fig(a.get('beta'))}  "
                f"excess return {_fig(a.get('excess_total_return'), True)} over the run  {rel}"
            )
    names: dict[int, str] = {}
    for k, st in enumerate(getattr(cfg, "strategies", None) or []):
        names[st.id or k + 1] = st.name or st.path.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
    for sid, v in sorted(by_strategy.items(), key=lambda kv: int(kv[0])):
        name = names.get(int(sid), f"strategy {sid}")
        lines.append(
            f"  P&L {name:<16} net {v['net']:>+11.2f}  realized {v['realized']:>+11.2f}  "
            f"unrealized {v['unrealized']:>+11.2f}  fees {v['fees']:>9.2f}  fills {int(v['fills'])}"
        )
    return lines
