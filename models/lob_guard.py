"""Does a micro direction model fit what the infer process serves it on? Checked at start and at
every hot swap (``models.lob_server``), before the model may serve.

Why: a micro model reads a feature row that only means what it meant in training when the feed
is read in the same units and the same way. Format and feature list are ``MicroModel``'s
checks; the rest is here, each a reason in the log line and in ``ModelRejected``:

- tick: its features (spread_ticks, microprice_ticks) and its expected move are in ticks of the
  training stream (meta.json ``tick`` x ``px_unit``, in currency); the engine's prices are ticks
  of each instrument's ``tick_size``. Another tick size means other units: refused. A model
  without ``tick`` / ``px_unit`` cannot be checked (said, not refused);
- expected move: a forecast's ``point`` is (2 P(up) - 1) x the mean mid change in training; a
  model without one (or not > 0) would publish 0 and no cost-aware strategy could act on it;
- book levels: a model of L levels reads imbalance_2 / imbalance_depth from L levels; a feed that
  gives fewer ([market] book_levels, replay_lobster_levels, quotes only) leaves them empty;
- instruments: a model whose meta.json names ``instruments`` serves only those;
- the running state (at a swap): the per-instrument book and feature state is kept across a
  swap, and it was built on the running model's events (its levels, its coalescing). A new
  version with other levels or other coalescing would read a state that means something else:
  refused whatever ``mismatch`` says (restart infer to change them).

``[inference] mismatch = "warn"`` serves a model with the other misfits anyway (logged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

#: relative tolerance of a tick comparison (0.01 stored as 0.010000000001 still matches)
_REL_TOL = 1e-6


@dataclass(frozen=True)
class MicroSpec:
    """What the running configuration asks of a micro model."""

    symbols: tuple[str, ...] = ()  # served symbols, in order
    iids: tuple[int, ...] = ()  # their instrument ids
    ticks: tuple[float, ...] = ()  # their tick_size (currency per engine price unit)
    feed_levels: int = 0  # book levels the feed gives per side (0 = unknown: not checked)
    feed_source: str = ""  # where feed_levels comes from (said in the reason)
    mismatch: str = "refuse"  # refuse | warn
    unknown: tuple[str, ...] = ()  # [inference] micro_instruments this run does not have
    levels: int = 0  # the running model's book levels (0 = none served yet)
    coalesce: bool | None = None  # the running model's coalescing (None = none served yet)

    @classmethod
    def from_config(cls, cfg: Any) -> MicroSpec:
        """The spec of a run's config (``ops.config.Config``: ``[inference]``, ``[market]``,
        ``[[instruments]]``, its venues)."""
        inf = cfg.inference
        by_symbol = {i.symbol: i for i in cfg.instruments}
        wanted = list(getattr(inf, "micro_instruments", []) or []) or list(by_symbol)
        known = [s for s in wanted if s in by_symbol]
        levels, source = feed_levels(cfg)
        return cls(
            symbols=tuple(known),
            iids=tuple(by_symbol[s].instrument_id for s in known),
            ticks=tuple(float(by_symbol[s].tick_size) for s in known),
            feed_levels=levels,
            feed_source=source,
            mismatch=str(inf.mismatch),
            unknown=tuple(s for s in wanted if s not in by_symbol),
        )

    def running(self, meta: dict[str, Any]) -> MicroSpec:
        """This spec with the served model's levels and coalescing pinned."""
        return replace(self, levels=_levels(meta), coalesce=bool(meta.get("coalesce", False)))


def feed_levels(cfg: Any) -> tuple[int, str]:
    """(book levels per side the market data gives, where that is set); 0 when unknown."""
    venues = [v for v in getattr(cfg, "venues", []) if hasattr(v, "book_depth")]
    markets = getattr(getattr(cfg, "resolved", None), "markets", None)
    if markets and venues:  # a run on real venues: their books
        depth = [int(v.book_depth) for v in venues]
        return (0, "") if 0 in depth else (min(depth), "[[venues]] book_depth")
    m = cfg.market
    if m.source == "synthetic":
        return int(m.book_levels), "[market] book_levels"
    if m.source == "replay":
        if m.replay_lobster_messages:
            return int(m.replay_lobster_levels), "[market] replay_lobster_levels"
        return 1, "[market] replay_quotes / replay_trades: quotes only"
    return 0, ""  # a catalog: its rows say (not checked)


def _levels(meta: dict[str, Any]) -> int:
    try:
        return max(1, int(meta.get("levels", 1)))
    except (TypeError, ValueError):
        return 0


def expected_move_ticks(meta: dict[str, Any]) -> float:
    """The mean size of a mid change in training, in ticks (NaN when meta has none)."""
    move = meta.get("expected_move_ticks")
    try:
        if move is None:
            tick = float(meta.get("tick", 1.0) or 1.0)
            return float(meta["expected_move"]) / tick
        return float(move)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return math.nan


def misfits(meta: dict[str, Any], spec: MicroSpec) -> list[str]:
    """Every way the model (its meta.json) does not fit the configuration; [] when it fits."""
    out: list[str] = []
    if spec.unknown:
        out.append(
            f"[inference] micro_instruments names {list(spec.unknown)}, not instruments of this run"
        )
    move = expected_move_ticks(meta)
    if not (move > 0 and math.isfinite(move)):
        out.append(
            "its expected move (meta.json expected_move / expected_move_ticks) is missing or not "
            "> 0: its forecasts' point would be 0 and no cost-aware strategy could act on them"
        )
    unit = model_tick(meta)
    if unit is not None:
        other = [
            f"{s} ({t:g})"
            for s, t in zip(spec.symbols, spec.ticks, strict=True)
            if not math.isclose(t, unit, rel_tol=_REL_TOL)
        ]
        if other:
            out.append(
                f"it was trained on a tick of {unit:g} (meta.json tick x px_unit) but "
                f"{', '.join(other)} trade in other ticks ([[instruments]] tick_size): "
                "spread_ticks, microprice_ticks and its expected move would be in other units"
            )
    levels = _levels(meta)
    if not levels:
        out.append(f"meta.json levels {meta.get('levels')!r} is not a number of book levels")
    elif spec.feed_levels and levels > spec.feed_levels:
        out.append(
            f"it reads {levels} book levels but the feed gives {spec.feed_levels} "
            f"({spec.feed_source}): imbalance_2 and imbalance_depth would read empty levels"
        )
    if not isinstance(meta.get("coalesce", False), bool):
        out.append(f"meta.json coalesce {meta.get('coalesce')!r} is not true or false")
    trained = meta.get("instruments") or []
    missing = [s for s in spec.symbols if trained and s not in trained]
    if missing:
        out.append(
            f"it was trained for {list(trained)}, not for {missing} (meta.json instruments; "
            "[inference] micro_instruments chooses what it serves)"
        )
    return out


def state_misfits(meta: dict[str, Any], spec: MicroSpec) -> list[str]:
    """Why a new version cannot take over the running model's feature state ([] when it can,
    or when nothing is served yet)."""
    if spec.coalesce is None:
        return []
    out: list[str] = []
    levels = _levels(meta)
    if levels != spec.levels:
        out.append(
            f"it reads {levels} book levels but the running micro model {spec.levels}: the "
            "book and feature state kept across a swap is built on those (restart infer to "
            "change them)"
        )
    if bool(meta.get("coalesce", False)) != spec.coalesce:
        said = "one event per time (coalesced)" if spec.coalesce else "every message an event"
        out.append(
            f"its coalescing differs from the running micro model's ({said}): the feature "
            "state kept across a swap counts those events (restart infer to change it)"
        )
    return out


def model_tick(meta: dict[str, Any]) -> float | None:
    """The training stream's tick in currency (None when meta cannot say)."""
    try:
        unit = float(meta["tick"]) * float(meta["px_unit"])
    except (KeyError, TypeError, ValueError):
        return None
    return unit if unit > 0 and math.isfinite(unit) else None
