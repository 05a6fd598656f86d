"""Does a model fit the running configuration? Checked before a model may serve, at start and at
every hot swap (``models.serving.ModelServer``).

Why: a model is a function of bars of one length, of one feature layout, for some instruments,
with some horizon. A model trained on daily bars that is swapped into an engine running 0.2 s bars
used to be accepted: the bars switched to daily and the engine silently stopped forecasting (or,
with the bar length pinned in the config, forecast 0.2 s bars with a daily model). A mismatch is
now a reason, given in the log line and in ``ModelRejected``, and the last good model keeps serving.

What "running" means: a setting the config pins ([inference] bar_seconds, horizon, instruments)
or, left at 0, the first model served pins it; a later version must match it. Features are checked
by ``models.serving`` (names and order, against the features the engine computes). Tick bars
([inference] every_n_ticks) have no length to compare with the first model; later versions still
match the first one's bar length. ``mismatch = "warn"`` serves a mismatched model anyway (logged),
on the running bars: the bar length never changes at a swap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

#: relative tolerance of a bar-length comparison (0.2 stored as 0.2000000001 still matches)
_REL_TOL = 1e-6


@dataclass(frozen=True)
class ServingSpec:
    """What the running configuration asks of a model; 0 / () = not pinned (yet)."""

    bar_seconds: float = 0.0  # the running bar length (venue-clock seconds)
    horizon: int = 0  # forecast steps the strategies read: a model must have at least these
    symbols: tuple[str, ...] = ()  # the instruments infer forecasts
    mismatch: str = "refuse"  # refuse | warn
    bar_source: str = "config"  # who pinned bar_seconds (said in the reason)
    horizon_source: str = "config"

    @classmethod
    def from_config(cls, inf: Any, symbols: Sequence[str]) -> ServingSpec:
        """The spec of an ``[inference]`` section (``ops.config.InferenceSection``)."""
        return cls(
            bar_seconds=0.0 if inf.every_n_ticks else float(inf.bar_seconds),
            horizon=int(inf.horizon),
            symbols=tuple(symbols),
            mismatch=str(inf.mismatch),
        )

    def pinned_by(self, meta: dict[str, Any]) -> ServingSpec:
        """This spec with what it left open taken from the first served model's meta."""
        spec = self
        bar = float(meta.get("bar_seconds") or 0)
        if not spec.bar_seconds and bar > 0:
            spec = replace(spec, bar_seconds=bar, bar_source=f"model {meta.get('version')!s}")
        if not spec.horizon:
            spec = replace(
                spec, horizon=int(meta["horizon"]), horizon_source=f"model {meta.get('version')!s}"
            )
        return spec


def misfits(meta: dict[str, Any], spec: ServingSpec) -> list[str]:
    """Every way a model (its meta.json) does not fit ``spec``; [] when it fits."""
    out: list[str] = []
    bar = float(meta.get("bar_seconds") or 0)
    if (
        bar > 0
        and spec.bar_seconds > 0
        and not math.isclose(bar, spec.bar_seconds, rel_tol=_REL_TOL)
    ):
        who = (
            "[inference] bar_seconds"
            if spec.bar_source == "config"
            else f"the bar length of {spec.bar_source}, served first"
        )
        out.append(
            f"it was trained on {bar:g} s bars (bar_seconds) but the engine runs {spec.bar_seconds:g} s "
            f"bars ({who}): its forecasts would be for another horizon than it learned"
        )
    horizon = int(meta["horizon"])
    if spec.horizon and horizon < spec.horizon:
        who = "[inference] horizon" if spec.horizon_source == "config" else spec.horizon_source
        out.append(
            f"its horizon is {horizon} steps but {spec.horizon} are needed ({who}): "
            "strategies would read steps it does not forecast"
        )
    trained = meta.get("instruments") or []
    if trained and spec.symbols:
        missing = [s for s in spec.symbols if s not in trained]
        if missing:
            out.append(
                f"it was trained for {list(trained)}, not for {missing} (meta.json instruments; "
                "[inference] instruments chooses what is forecast)"
            )
    return out
