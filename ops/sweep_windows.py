"""A sweep's data windows and parameter points, from ``[sweep]`` and the market it replays.

Windows (docs/sweeps.md): the synthetic market has no calendar, so its windows are independent
draws of the same process — window k is the market with seed ``[market] seed + k``, each
``window_events`` long; a replay or the catalog is cut in time: ``[sweep] start``..``end`` (for
the catalog, by default its ``catalog_start``..``catalog_end``) split into ``windows``
consecutive, equal spans. A LOBSTER replay is refused: cutting a depth stream in time drops the
book state it starts from (import it into the catalog, which windows it properly).
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from ops.sweep_trial import Window


class SweepError(ValueError):
    """A sweep that cannot run as configured (the message says which key)."""


def parse_time_ns(text: str, key: str, *, end: bool = False) -> int:
    """ISO 8601 (no zone: UTC) or integer nanoseconds since the epoch; a bare date as an ``end``
    means the end of that day (as ``[market] catalog_end`` reads it)."""
    s = str(text).strip()
    if s.lstrip("-").isdigit():
        return int(s)
    try:
        t = dt.datetime.fromisoformat(s)
    except ValueError:
        raise SweepError(f"{key}: {text!r} is no ISO time nor ns") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return ns + (86_400 * 10**9 if end and len(s) == 10 else 0)


def _catalog_span(m: Any) -> tuple[str, str]:
    """The catalog's own span (whole days, from its partitions) when ``catalog_start`` /
    ``catalog_end`` leave it open."""
    start, end = m.catalog_start, m.catalog_end
    if start and end:
        return start, end
    from engine.catalog import list_catalog

    held = [e for e in list_catalog(m.catalog_dir) if e["venue"] == (m.catalog_venue or e["venue"])]
    if not held:
        raise SweepError(f"market.catalog_dir: {m.catalog_dir} holds no data to cut into windows")
    return start or min(e["first"] for e in held), end or max(e["last"] for e in held)


def make_windows(cfg: Any) -> list[Window]:
    """The ``[sweep] windows`` windows of ``cfg``'s market (module docstring)."""
    sw, m = cfg.sweep, cfg.market
    n, events = sw.windows, sw.window_events or cfg.backtest.events
    if m.source == "synthetic":
        return [Window(k, f"seed {m.seed + k}", seed=m.seed + k, events=events) for k in range(n)]
    if m.source == "replay" and m.replay_lobster_messages:
        raise SweepError(
            "market.replay_lobster_messages: a LOBSTER replay cannot be cut into time windows "
            "(each window would start without its book); import it into the catalog "
            '(gekko data import lobster) and sweep over [market] source = "catalog"'
        )
    start, end = sw.start, sw.end
    if m.source == "catalog" and not (start and end):
        own = _catalog_span(m)
        start, end = start or own[0], end or own[1]
    if not start or not end:
        raise SweepError(
            "sweep.start / sweep.end: a replay is cut into windows by time; give the span "
            "(ISO or ns)"
        )
    t0, t1 = parse_time_ns(start, "sweep.start"), parse_time_ns(end, "sweep.end", end=True)
    if t1 <= t0:
        raise SweepError("sweep.end: must be after sweep.start")
    edges = [t0 + (t1 - t0) * k // n for k in range(n + 1)]
    return [
        Window(k, f"{_iso(edges[k])} .. {_iso(edges[k + 1])}", None, edges[k], edges[k + 1], events)
        for k in range(n)
    ]


def _iso(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def strategy_index(cfg: Any) -> int:
    """The ``[[strategies]]`` entry ``[sweep] strategy`` names (its name, id or class path;
    "" = the first)."""
    want = cfg.sweep.strategy
    if not cfg.strategies:
        raise SweepError("strategies: a sweep needs a [[strategies]] entry to sweep")
    if not want:
        return 0
    for k, s in enumerate(cfg.strategies):
        if want in (s.name, str(s.id or k + 1), s.path):
            return k
    raise SweepError(f"sweep.strategy: no [[strategies]] entry is named {want!r}")


def _range_values(spec: dict[str, Any]) -> list[Any]:
    lo, hi, step = spec["low"], spec["high"], spec["step"]
    ints = all(isinstance(v, int) for v in (lo, hi, step))
    out, k = [], 0
    while True:
        v = lo + k * step
        if v > hi + (0 if ints else 1e-12 * max(1.0, abs(hi))):
            return out
        out.append(v if ints else round(v, 12))
        k += 1


def grid_points(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the values of ``[sweep.params]`` (a range: low..high by step)."""
    names = sorted(params)
    axes = [params[n] if isinstance(params[n], list) else _range_values(params[n]) for n in names]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]


def suggest(trial: Any, params: dict[str, Any]) -> dict[str, Any]:
    """One Optuna trial's parameters: a list is a categorical choice, a range is sampled
    (integers when low, high and step are integers)."""
    out: dict[str, Any] = {}
    for name in sorted(params):
        spec = params[name]
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
            continue
        lo, hi, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log"))
        if all(isinstance(v, int) for v in (lo, hi, step if step is not None else 1)):
            out[name] = trial.suggest_int(name, lo, hi, step=step or 1, log=log)
        else:
            out[name] = trial.suggest_float(name, float(lo), float(hi), step=step, log=log)
    return out
