"""Several simulated venues from one market: each sees its own book, with its own fees.

Smart order routing (``engine.routing``) only has something to decide when venues differ. With
one market-data source (the synthetic market or a replay), the simulated venues are made to
differ the way real ones do: each gets the market through a *view* that shifts every price by
``px_offset_ticks`` (a venue quoting a tick higher or lower) and scales every size by
``size_scale`` (a thinner or deeper venue), and each has its own maker/taker fees and latency.
``ShiftedVenue`` wraps a ``SimExchange`` with that view; ``build_sim_venues`` makes the set from
``VenueSpec``s (``[[venues]]`` in config.toml) and puts a ``SmartRouter`` over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.messages import BookDelta, BookSnapshot, Quote, Trade
from engine.routing import SmartRouter
from engine.venues.base import VenueEvent
from engine.venues.sim import SimExchange

__all__ = ["ShiftedVenue", "VenueSpec", "build_sim_venues", "shift_market_data"]


@dataclass(frozen=True, slots=True)
class VenueSpec:
    """One simulated venue (a ``[[venues]]`` table)."""

    name: str
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    latency_ns: int = 0
    jitter_ns: int = 0
    px_offset_ticks: int = 0
    size_scale: float = 1.0


def _q(qty: int, scale: float) -> int:
    return qty if scale == 1.0 or qty <= 0 else max(1, round(qty * scale))


def shift_market_data(msg: object, px_offset_ticks: int, size_scale: float) -> object:
    """``msg`` as a venue offset by ``px_offset_ticks`` and scaled by ``size_scale`` shows it.

    Prices of 0 (an empty side) stay 0; a positive size never scales to 0 (a level that exists
    stays)."""
    off, sc = px_offset_ticks, size_scale
    if off == 0 and sc == 1.0:
        return msg
    t = type(msg)
    if t is BookDelta:
        return BookDelta(
            msg.instrument_id,
            msg.side,
            msg.px + off,
            _q(msg.qty, sc),  # type: ignore[attr-defined]
            msg.ts_event,
            msg.ts_recv,
            msg.seq,  # type: ignore[attr-defined]
        )
    if t is Quote:
        return Quote(
            msg.instrument_id,  # type: ignore[attr-defined]
            msg.bid_px + off if msg.bid_px else 0,  # type: ignore[attr-defined]
            _q(msg.bid_qty, sc),  # type: ignore[attr-defined]
            msg.ask_px + off if msg.ask_px else 0,  # type: ignore[attr-defined]
            _q(msg.ask_qty, sc),  # type: ignore[attr-defined]
            msg.ts_event,
            msg.ts_recv,
            msg.seq,  # type: ignore[attr-defined]
        )
    if t is Trade:
        return Trade(
            msg.instrument_id,
            msg.px + off,
            _q(msg.qty, sc),
            msg.side,  # type: ignore[attr-defined]
            msg.ts_event,
            msg.ts_recv,
            msg.trade_id,  # type: ignore[attr-defined]
        )
    if t is BookSnapshot:
        m: Any = msg
        return BookSnapshot(
            m.instrument_id,
            [p + off for p in m.bid_px],
            [_q(q, sc) for q in m.bid_qty],
            [p + off for p in m.ask_px],
            [_q(q, sc) for q in m.ask_qty],
            m.ts_event,
            m.ts_recv,
            m.seq,
        )
    return msg


class ShiftedVenue:
    """A venue that sees the market through ``shift_market_data``; everything else is the
    wrapped venue's (orders, events, book, fees)."""

    def __init__(
        self, inner: SimExchange, px_offset_ticks: int = 0, size_scale: float = 1.0
    ) -> None:
        if not size_scale > 0:
            raise ValueError(f"size_scale must be > 0, got {size_scale}")
        self.inner = inner
        self.name = inner.name
        self.px_offset_ticks = int(px_offset_ticks)
        self.size_scale = float(size_scale)

    def on_market_data(self, msg: object, now_ns: int) -> list[VenueEvent]:
        return self.inner.on_market_data(
            shift_market_data(msg, self.px_offset_ticks, self.size_scale), now_ns
        )

    def __getattr__(self, attr: str) -> Any:  # submit, cancel, replace, poll, book, fees, ...
        return getattr(self.inner, attr)


def build_sim_venues(instruments: Any, specs: Sequence[VenueSpec], *, seed: int = 0) -> SmartRouter:
    """One ``SimExchange`` per spec (seeds ``seed``, ``seed + 1``, ...) behind a SmartRouter."""
    if not specs:
        raise ValueError("build_sim_venues needs at least one venue")
    from engine.venues.registry import VenueConfig, lookup

    sim = lookup("sim")
    venues: dict[str, Any] = {}
    for k, s in enumerate(specs):
        settings = {
            "maker_fee_bps": s.maker_fee_bps,
            "taker_fee_bps": s.taker_fee_bps,
            "latency_ns": s.latency_ns,
            "jitter_ns": s.jitter_ns,
            "px_offset_ticks": s.px_offset_ticks,
            "size_scale": s.size_scale,
        }
        venues[s.name] = sim.execution(VenueConfig(s.name, "sim", instruments, settings, seed + k))
    return SmartRouter(venues, instruments=instruments)
