"""Each instrument's sigma on the strategy side, as the risk gate measures it: for sizing.

Why: a volatility-targeting strategy must size with the sigma the risk gate judges its orders
with (``[risk] volatility`` = window | ewma | har, ``volatility_lambda``, ``har_refit``,
``returns_interval_s``, ``returns_window``, ``min_history``), or the positions it sizes are not
the ones VaR allows.
The gate's window lives in the risk process, so a strategy keeps its own from the mids it sees:
at each grid time (every ``returns_interval_s`` from the first mid) the latest mid at or before
it goes through the gate's own sampler (``engine.risk_stats.ReturnSampler``), and the variance is
the gate's (``engine.risk_stats.return_variance``). Fed with every mid change, it holds the
window the gate would hold (tests/test_vol_risk.py checks it); sigma is NaN until
``min_history`` returns exist: no sigma, no volatility-sized position. With ``"har"`` the fit,
its refit clock and calibration are the gate's; its realised variance here sums the squared
changes of every mid the strategy feeds, where the gate sums those of its refreshes' prices:
the same window, a slightly different RV, so HAR sigmas agree closely, not exactly.
"""

from __future__ import annotations

import math

import numpy as np

from engine.har import HarForecaster
from engine.risk_limits import RiskLimits
from engine.risk_stats import VOLATILITY, ReturnSampler, return_variance


class SigmaTracker:
    """Mids in, per-interval sigma out, for instruments indexed by id (``0 .. n-1``)."""

    def __init__(
        self,
        n: int,
        interval_ns: int,
        window: int = 500,
        volatility: str = "window",
        lam: float = 0.94,
        min_obs: int = 30,
        har_refit: int = 20,
    ) -> None:
        if volatility not in VOLATILITY or not 0.0 < lam < 1.0 or interval_ns <= 0:
            raise ValueError(f"volatility one of {VOLATILITY}, lam in (0, 1), interval_ns > 0")
        self.interval_ns = int(interval_ns)
        self.volatility = volatility
        self.lam = float(lam)
        self.min_obs = max(3, int(min_obs))  # as RiskStats
        self.n, self.window = int(n), int(window)
        # allocated at the first mid: a host sets one in every strategy's context, most unused
        self.sampler: ReturnSampler | None = None
        self.mids = np.zeros(0)  # the latest mid of each instrument (0: none yet)
        self.var = np.zeros(0)  # per-interval variance, once ready
        self.next_ns: int | None = None  # the next grid time (None before the first mid)
        self.har_refit = int(har_refit)
        self.har: HarForecaster | None = None  # volatility = "har": the fit, as the gate's

    @classmethod
    def from_risk(cls, limits: RiskLimits, n: int) -> SigmaTracker:
        """The gate's settings: ``[risk]`` volatility, its lambda, interval, window, history."""
        return cls(
            n,
            limits.returns_interval_ns,
            limits.returns_window,
            limits.volatility,
            limits.volatility_lambda,
            limits.min_history,
            limits.har_refit,
        )

    @property
    def ready(self) -> bool:
        return self.sampler is not None and self.sampler.count >= self.min_obs

    def observe(self, iid: int, mid: float, now_ns: int) -> None:
        """A mid of instrument ``iid`` at ``now_ns``. Grid times passed since the last call are
        sampled first, with the mids as they stood (a grid time with no new mid is a 0 return,
        as the gate's sampler has it)."""
        if self.next_ns is None:
            self.next_ns = now_ns + self.interval_ns  # the grid starts at the first mid
            self.sampler = ReturnSampler(self.n, self.window)
            self.mids = np.zeros(self.n)
            self.var = np.zeros(self.n)
            if self.volatility == "har":
                self.har = HarForecaster(self.n, self.har_refit)
        elif now_ns >= self.next_ns:
            self._sample(now_ns)
        if 0 <= iid < self.mids.shape[0] and mid > 0 and math.isfinite(mid):
            self.mids[iid] = mid
            if self.har is not None and self.sampler is not None:
                self.sampler.observe_one(iid, mid)  # the interval's realised variance

    def _sample(self, now_ns: int) -> None:
        assert self.next_ns is not None and self.sampler is not None
        due = (now_ns - self.next_ns) // self.interval_ns + 1
        self.next_ns += due * self.interval_ns
        for _ in range(min(due, self.sampler.window + 1)):  # more would only push rows out
            self.sampler.sample(self.mids)
        if self.har is not None:  # the gate's refit clock: one interval per sample
            self.har.age += due - 1
            r, rv, fine = self.sampler.window_rv()
            self.var = return_variance(r, "har", self.lam, self.har, rv, fine)
        elif self.ready:
            self.var = return_variance(self.sampler.matrix(), self.volatility, self.lam)

    def sigma(self, iid: int) -> float:
        """Instrument ``iid``'s sigma of one return interval (a fraction); NaN while unknown."""
        if not self.ready or not 0 <= iid < self.var.shape[0]:
            return float("nan")
        v = float(self.var[iid])
        return math.sqrt(v) if v > 0 else float("nan")
