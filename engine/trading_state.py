"""The engine-wide trading state: ACTIVE → REDUCING → HALTED, with who moved it, why and when.

Why a separate state machine: the state is what a trader asks first ("are we trading, and if
not, why not, since when?"), several parties move it (the operator's kill switch, the daily-loss
circuit breaker, drawdown protection) and one rule governs all of them: **automatic moves only
ever escalate** (ACTIVE → REDUCING → HALTED); only an explicit command (``resume``) brings the
engine back to ACTIVE. Every change yields a ``TradingStateChanged`` message, the only way the
state ever changes, so the record is complete by construction.

Persistence is the caller's job (the engine does no I/O): ``snapshot()`` gives a plain dict to
store, ``restore()`` puts it back after a restart of the risk process.
"""

from __future__ import annotations

from typing import Any

from engine.messages import TradingState, TradingStateChanged

_RANK = {int(TradingState.ACTIVE): 0, int(TradingState.REDUCING): 1, int(TradingState.HALTED): 2}


class TradingStateMachine:
    """The current state, its reason, source and time (monotonic ns and wall ns)."""

    def __init__(self) -> None:
        self.state = int(TradingState.ACTIVE)
        self.reason = "start"
        self.source = "start"
        self.since_ns = 0
        self.since_wall_ns = 0
        self.changes = 0

    def _move(
        self,
        state: int,
        reason: str,
        source: str,
        now_ns: int,
        wall_ns: int,
        value: float,
        limit: float,
    ) -> TradingStateChanged:
        prev = self.state
        self.state, self.reason, self.source = int(state), reason, source
        self.since_ns, self.since_wall_ns = now_ns, wall_ns
        self.changes += 1
        return TradingStateChanged(
            state=int(state),
            prev_state=prev,
            reason=reason,
            source=source,
            ts=now_ns,
            wall_ns=wall_ns,
            value=float(value),
            limit=float(limit),
        )

    def escalate(
        self,
        state: int,
        reason: str,
        source: str,
        now_ns: int,
        wall_ns: int = 0,
        value: float = 0.0,
        limit: float = 0.0,
    ) -> TradingStateChanged | None:
        """Move to ``state`` if it is stricter than the current one; None otherwise (a breaker
        that trips again while already halted changes nothing and records nothing new)."""
        if _RANK[int(state)] <= _RANK[self.state]:
            return None
        return self._move(state, reason, source, now_ns, wall_ns, value, limit)

    def resume(
        self, reason: str, source: str, now_ns: int, wall_ns: int = 0
    ) -> TradingStateChanged | None:
        """The explicit way back to ACTIVE (None if already active)."""
        if self.state == TradingState.ACTIVE:
            return None
        return self._move(int(TradingState.ACTIVE), reason, source, now_ns, wall_ns, 0.0, 0.0)

    @property
    def halted(self) -> bool:
        return self.state == TradingState.HALTED

    @property
    def reducing(self) -> bool:
        return self.state == TradingState.REDUCING

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": TradingState(self.state).name,
            "reason": self.reason,
            "source": self.source,
            "since_ns": self.since_ns,
            "since_wall_ns": self.since_wall_ns,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Put back a ``snapshot()``; an unreadable one leaves the machine as it is (ValueError)."""
        try:
            state = int(TradingState[str(snap["state"])])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a trading state snapshot: {snap!r}") from exc
        self.state = state
        self.reason = str(snap.get("reason", ""))
        self.source = str(snap.get("source", ""))
        self.since_ns = int(snap.get("since_ns", 0) or 0)
        self.since_wall_ns = int(snap.get("since_wall_ns", 0) or 0)
