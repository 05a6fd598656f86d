"""The ``[exec]`` section: how exec handles what is not a plain order for a healthy venue.

``config.toml``'s ``[exec]`` loads straight into ``ExecPolicy`` (``engine/settings.py``): the
field names are the keys, in the file's units; the ns and order-type values the exec engine
needs are derived once. What is not a setting (the incarnation's block of exec-owned ids, risk's
staleness limit) is given to ``ExecEngine`` itself. config.toml's comments document each key.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import msgspec

from engine.messages import OrderType
from engine.settings import Settings, need

ORDER_TYPE_NAMES = tuple(t.name for t in OrderType)


class ExecPolicy(Settings):
    """Retries, the price-gap check, halts and order-type emulation (config ``[exec]``)."""

    max_retries: int = 2
    retry_backoff_ms: float = 50.0
    retry_backoff_factor: float = 2.0
    #: substrings of a venue's reject reason that make it worth retrying (matched lower-case)
    retry_on: tuple[str, ...] = ("busy", "rate limit", "throttl", "timeout", "try again")
    price_gap_bps: float = 100.0  # 0 disables the price-gap check
    # a binary's band in ticks of its price, a betting selection's in ladder ticks: refused past
    # these and price_gap_bps both (engine.price_gap); 0 = off for that kind
    price_gap_ticks: float = 3.0
    price_gap_ladder_ticks: float = 5.0
    halt_policy: str = "hold"  # "hold" | "reject"
    native_order_types: tuple[str, ...] = ("MARKET", "LIMIT")
    emulate: bool = True
    publish_anomalies: bool = True

    # -- derived once (engine/settings.py): the units the exec engine works in --
    retry_backoff_ns: ClassVar[int]
    native_types: ClassVar[frozenset[int]]  # native_order_types as OrderType values

    def derived(self) -> dict[str, Any]:
        return {
            "retry_backoff_ns": int(self.retry_backoff_ms * 1_000_000),
            "native_types": frozenset(int(OrderType[t]) for t in self.native_order_types),
        }

    def check(self) -> None:
        need(0 <= self.max_retries <= 100, "max_retries", "must be within 0..100")
        need(
            math.isfinite(self.retry_backoff_ms) and self.retry_backoff_ms >= 0,
            "retry_backoff_ms",
            "must be >= 0",
        )
        need(
            math.isfinite(self.retry_backoff_factor) and 1 <= self.retry_backoff_factor <= 100,
            "retry_backoff_factor",
            "must be within 1..100",
        )
        need(
            all(isinstance(r, str) and r.strip() for r in self.retry_on),
            "retry_on",
            "entries must be non-empty strings",
        )
        # matched against the lower-cased reject reason: kept lower-case
        msgspec.structs.force_setattr(self, "retry_on", tuple(r.lower() for r in self.retry_on))
        need(
            math.isfinite(self.price_gap_bps) and self.price_gap_bps >= 0,
            "price_gap_bps",
            "must be >= 0 (0 = off)",
        )
        for key in ("price_gap_ticks", "price_gap_ladder_ticks"):
            v = getattr(self, key)
            need(math.isfinite(v) and v >= 0, key, "must be >= 0 (0 = off)")
        need(self.halt_policy in ("hold", "reject"), "halt_policy", "must be 'hold' or 'reject'")
        for t in self.native_order_types:
            need(
                t in ORDER_TYPE_NAMES,
                "native_order_types",
                f"unknown order type {t!r} (one of {', '.join(ORDER_TYPE_NAMES)})",
            )
        need(
            "MARKET" in self.native_order_types and "LIMIT" in self.native_order_types,
            "native_order_types",
            "must include MARKET and LIMIT (they cannot be emulated)",
        )
