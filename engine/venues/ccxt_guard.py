"""What keeps a live venue from throttling or banning us: a request-weight budget, ``Retry-After``,
bans, and the clock offset its signatures depend on.

Why we budget ourselves (ccxt's own limiter is off, ``ccxt_session.make_exchange``): ccxt waits
``rateLimit`` ms between calls whatever they cost, while exchanges count weight per call in a
window (Binance: 1200 weight per minute on Binance.US, an order book query costing more than a
submit) and answer an overdraft with 429, then 418 and an IP ban of minutes to days. So:

- ``WeightBudget``: a sliding window of the weight spent (Kraken: a decaying counter), sized
  from the exchange's published limits (``DEFAULT_LIMITS``, overridable by the venue's
  ``rate_limit_weight`` / ``rate_limit_window_s`` / ``request_weights`` settings); a request
  waits until it fits. A
  ``X-MBX-USED-WEIGHT-1M`` header (Binance's own count) tops our count up when it is higher.
- ``Guard.on_response``: a 429 blocks every request until its ``Retry-After`` has passed; a 418
  stops the venue's order entry until the ban's end, says so in ``reason``, and no request is
  sent into it. ``on_limit_error`` does the same for a venue that says it in an HTTP 200 body
  (Kraken's ``EAPI:Rate limit exceeded`` / ``EGeneral:Temporary lockout``).
- ``ClockSync``: the server's clock offset, measured with ``fetch_time`` at start and every
  ``clock_sync_s``; Binance signs with a timestamp checked against ``recvWindow`` (-1021 when
  outside), so a -1021 / ccxt ``InvalidNonce`` re-measures and the request is retried once.

Pure logic: time comes in as ``now`` (monotonic seconds), so all of it is tested without a server.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_WEIGHTS",
    "DECAYING",
    "Banned",
    "ClockSync",
    "Guard",
    "WeightBudget",
    "retry_after_s",
]

#: (weight, window seconds) per exchange id, from each exchange's published REST limits
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {
    "binanceus": (1200.0, 60.0),  # REQUEST_WEIGHT 1200 / minute (exchangeInfo rateLimits)
    "binance": (6000.0, 60.0),
    "binanceusdm": (2400.0, 60.0),  # USD-M futures: REQUEST_WEIGHT 2400 / minute
    "krakenfutures": (500.0, 10.0),  # derivatives endpoints: cost 500 per 10 seconds
    "coinbase": (30.0, 1.0),  # Advanced Trade private endpoints: 30 requests / second
    "kraken": (15.0, 45.0),  # counter 15, decaying 0.33 / s (Starter tier)
}
_FALLBACK_LIMIT = (10.0, 1.0)
#: exchanges whose limit is a counter decaying at limit / window per second, not a window
DECAYING = frozenset({"kraken"})

#: request weight per ccxt method and exchange (missing: 1)
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "binanceus": {
        "fetch_order": 4,
        "fetch_open_orders": 6,
        "fetch_closed_orders": 20,
        "fetch_orders": 20,
        "fetch_my_trades": 20,
        "fetch_balance": 20,
    },
    "kraken": {  # orders count in the matching engine's own limit, public calls per IP:
        "fetch_time": 0,  # neither is the private REST counter
        "load_markets": 0,
        "create_order": 0,
        "cancel_order": 0,
        "edit_order": 0,
        "fetch_my_trades": 2,
        "fetch_closed_orders": 2,
    },
}
DEFAULT_WEIGHTS["binance"] = DEFAULT_WEIGHTS["binanceus"]
DEFAULT_WEIGHTS["binanceusdm"] = {  # USD-M's own weights (one symbol named)
    "fetch_balance": 5,
    "fetch_positions": 5,
    "fetch_my_trades": 5,
    "fetch_closed_orders": 5,
    "fetch_funding_history": 30,
    "fapiPrivateGetForceOrders": 20,
}


class Banned(Exception):
    """Order entry refused locally: the venue banned us (never retried into the ban)."""


MAX_WAIT_S = 7 * 86_400.0  # the longest wait a venue's header may impose (Binance bans: <= 3 days)


def retry_after_s(headers: Mapping[str, Any] | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (seconds, or an HTTP date); ``default`` if none.
    A wait that is no number (NaN, inf) is ``default``; none is longer than ``MAX_WAIT_S``."""
    if not headers:
        return default
    raw = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if raw is None:
        return default
    try:
        s = float(raw)
    except (TypeError, ValueError):
        try:
            s = email.utils.parsedate_to_datetime(str(raw)).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return default
    return min(max(0.0, s), MAX_WAIT_S) if math.isfinite(s) else default


class WeightBudget:
    """Weight spent in the last ``window_s`` seconds, at most ``limit``; or, ``decaying``, a
    counter that loses ``limit / window_s`` per second (Kraken's model: a window would hold a
    spent point for 45 s where Kraken's counter frees one every 3 s)."""

    def __init__(self, limit: float, window_s: float, decaying: bool = False) -> None:
        if limit <= 0 or window_s <= 0:
            raise ValueError("rate limit weight and window must be > 0")
        self.limit, self.window_s = float(limit), float(window_s)
        self.decaying = decaying
        self._spent: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self._at = 0.0  # decaying: when ``_total`` was last brought up to date

    def _expire(self, now: float) -> None:
        if self.decaying:
            rate = self.limit / self.window_s
            self._total = max(0.0, self._total - rate * max(0.0, now - self._at))
            self._at = max(self._at, now)
            return
        while self._spent and self._spent[0][0] <= now - self.window_s:
            self._total -= self._spent.popleft()[1]

    def used(self, now: float) -> float:
        self._expire(now)
        return self._total

    def delay(self, weight: float, now: float) -> float:
        """Seconds until ``weight`` fits (0: now)."""
        self._expire(now)
        if weight <= 0 or self._total + weight <= self.limit:
            return 0.0
        need = self._total + weight - self.limit
        if self.decaying:
            return min(need, self.limit) * self.window_s / self.limit
        for t, w in self._spent:
            need -= w
            if need <= 0:
                return t + self.window_s - now
        return self.window_s  # heavier than the whole budget: one full window

    def take(self, weight: float, now: float) -> None:
        if weight > 0:
            self._expire(now)
            if not self.decaying:
                self._spent.append((now, weight))
            self._total += weight

    def left_ratio(self, now: float) -> float:
        """The fraction of the budget still free at ``now`` (1: untouched), read without
        changing anything (a monitor on another thread may call it)."""
        if self.decaying:
            rate = self.limit / self.window_s
            used = max(0.0, self._total - rate * max(0.0, now - self._at))
        else:
            used = sum(w for t, w in list(self._spent) if t > now - self.window_s)
        return max(0.0, 1.0 - used / self.limit)

    def observe_used(self, used: float, now: float) -> None:
        """The venue's own count (a used-weight header): never count less than it does."""
        gap = used - self.used(now)
        if gap > 0:
            self.take(gap, now)


class ClockSync:
    """The venue's clock minus ours, in ms (from a request's send / answer / server time)."""

    def __init__(self, every_s: float = 300.0) -> None:
        self.every_s = float(every_s)
        self.offset_ms = 0
        self.rtt_ms = 0
        self.measured_at: float | None = None
        self.measurements = 0

    def update(self, server_ms: int, sent_ms: int, recv_ms: int, now: float) -> int:
        """Offset = server time - the local midpoint of the round trip."""
        self.rtt_ms = max(0, recv_ms - sent_ms)
        self.offset_ms = int(server_ms - (sent_ms + recv_ms) // 2)
        self.measured_at = now
        self.measurements += 1
        return self.offset_ms

    def due(self, now: float) -> bool:
        return self.measured_at is None or now - self.measured_at >= self.every_s


class Guard:
    """One venue's budget, blocks and bans (see the module docstring)."""

    def __init__(self, exchange_id: str, settings: Mapping[str, Any] | None = None) -> None:
        s = settings or {}
        limit, window = DEFAULT_LIMITS.get(exchange_id, _FALLBACK_LIMIT)
        limit = float(s.get("rate_limit_weight") or limit)  # 0: the exchange's published
        window = float(s.get("rate_limit_window_s") or window)
        # (ops/venue_config takes its headroom off)
        self.budget = WeightBudget(limit, window, exchange_id in DECAYING)
        self.weights = dict(DEFAULT_WEIGHTS.get(exchange_id, {}))
        self.weights.update({k: float(v) for k, v in dict(s.get("request_weights", {})).items()})
        self.default_retry_s = float(s.get("retry_after_default_s", 1.0))
        self.default_ban_s = float(s.get("ban_default_s", 120.0))
        self.clock = ClockSync(float(s.get("clock_sync_s", 300.0)))
        self.blocked_until = 0.0
        self.banned_until = 0.0
        self.ban_reason = ""
        self.rate_limited = 0  # 429s seen
        self.bans = 0  # 418s seen
        self.refused_in_ban = 0  # order entries refused locally while banned
        self._limit_seen = -1e18  # when a 429/418 status was last seen

    def weight(self, method: str) -> float:
        return self.weights.get(method, 1.0)

    def wait_s(self, method: str, now: float) -> float:
        """How long a ``method`` request must wait: a ban's or a 429's end, or the budget."""
        hold = max(self.blocked_until, self.banned_until) - now
        return max(0.0, hold, self.budget.delay(self.weight(method), now))

    def spend(self, method: str, now: float) -> None:
        self.budget.take(self.weight(method), now)

    def on_response(self, status: int, headers: Mapping[str, Any] | None, now: float) -> None:
        """Every HTTP answer: used-weight headers, 429 blocks, 418 bans."""
        if headers:
            for k, v in headers.items():
                if str(k).lower().startswith("x-mbx-used-weight-1m"):
                    with contextlib.suppress(TypeError, ValueError):
                        used = float(v)
                        if math.isfinite(used):  # inf would poison the budget with NaN
                            self.budget.observe_used(used, now)
        if status == 429:
            self.rate_limited += 1
            self._limit_seen = now
            until = now + retry_after_s(headers, self.default_retry_s)
            self.blocked_until = max(self.blocked_until, until)
        elif status == 418:
            self._limit_seen = now
            self.ban(retry_after_s(headers, self.default_ban_s), now, "HTTP 418: IP banned")

    def on_limit_error(self, text: str, now: float) -> None:
        """A rate-limit answer without a 429/418 status (Kraken answers HTTP 200 with
        ``EAPI:Rate limit exceeded`` or ``EGeneral:Temporary lockout``): block for the default
        wait, or ban for the default ban on a lockout. Nothing when the status said it already."""
        if now - self._limit_seen < 1.0:
            return
        self._limit_seen = now
        low = text.lower()
        if "lockout" in low or "banned" in low:
            self.ban(self.default_ban_s, now, text[:120])
            return
        self.rate_limited += 1
        self.blocked_until = max(self.blocked_until, now + self.default_retry_s)

    def ban(self, seconds: float, now: float, why: str) -> None:
        self.bans += 1
        self.banned_until = max(self.banned_until, now + seconds)
        self.ban_reason = why

    def banned(self, now: float) -> bool:
        return now < self.banned_until

    def refusal(self, now: float) -> str:
        """Why a new order may not be sent now ("" if it may): a ban or a 429 block."""
        if self.banned(now):
            self.refused_in_ban += 1
            return f"venue banned us for {self.banned_until - now:.0f} s more ({self.ban_reason})"
        if now < self.blocked_until:
            return f"venue rate limit: Retry-After {self.blocked_until - now:.1f} s more"
        return ""

    def reason(self, now: float) -> str:
        """For ``state_reason``: the ban, else ""."""
        if self.banned(now):
            return f"banned for {self.banned_until - now:.0f} s ({self.ban_reason})"
        return ""
