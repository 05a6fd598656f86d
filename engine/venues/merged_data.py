"""Several venues' market data as one live client: every real venue, and the simulator's market.

Why one merging client and not a feed that reads several: the feed's loop, its validation, its
restart rules and its counters stay written once, for one ``LiveMarketDataClient``; what
"several venues" adds — draining each live client without waiting on any, and pacing the
simulated market (``market.rate_hz``) between them — lives here, beside the clients it merges.
A venue that is down simply delivers nothing: the others and the simulated market go on.

Members: at most one *paced* member (a client that is not live: the simulated venue's
``SimDataClient``, iterated with ``updates()`` at ``rate_hz`` messages per second of wall time
from the first poll, as the feed paces a simulated market on its own) and any number of *live*
members (``engine.venues.data.is_live``: drained with ``poll_updates``). Each poll takes the
paced messages that are due first, then shares what is left of ``max_n`` among the live members,
starting with a different one each time so a busy venue cannot starve the others.

Restart: the live members start from a fresh snapshot (nothing is skipped); the paced member
resumes where the previous feed left it: ``skip_paced(n)`` drops the ``n`` messages it had
taken (``paced_taken``, which the feed keeps in shared memory). A paced source that ends (a
replay) ends only its own part: the live venues go on.

``state()`` is the worst live member's state ("down" over "resyncing" over "connected");
``states()`` says each one's; ``counters()`` sums gaps, resyncs and reconnects.

A live member that goes down after it was connected halts its instruments: an ``ExchangeStatus``
HALTED ("market data down: <reason>") for each goes out with the data, and OPEN once it is
connected again (and at its first connect: a feed restarted during an outage must lift the halt
its predecessor announced). Fail closed: its last book is stale, so nothing may trade on it meanwhile (the
simulated exchange matches nothing, exec holds orders, risk refuses intents), while the other
venues' instruments trade on. A book being resynced is not a halt: it comes back whole.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from engine.enums import ExchangeStatusKind
from engine.messages import ExchangeStatus
from engine.venues.data import InstrumentRules, MarketDataClient, is_live

__all__ = ["MergedDataClient", "worst_state"]

_RANK = {"connected": 0, "resyncing": 1, "down": 2}


def worst_state(states: Iterable[str]) -> str:
    """The least healthy of ``states`` ("connected" for none; an unknown word counts as down)."""
    return max(states, key=lambda s: _RANK.get(s, 2), default="connected")


class MergedDataClient:
    """The market data of ``members`` (see the module docstring); ``rate_hz`` paces the one
    member that is not live."""

    live = True

    def __init__(self, members: Sequence[MarketDataClient], rate_hz: float, name: str = "") -> None:
        paced = [m for m in members if not is_live(m)]
        if len(paced) > 1:
            raise ValueError("at most one simulated market: simulated venues share one source")
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.members = list(members)
        self.name = name or "+".join(m.name for m in members)
        self.paced: Any = paced[0] if paced else None
        self.lives: list[Any] = [m for m in members if is_live(m)]
        self.rate = float(rate_hz)
        #: messages taken from the paced member since it started (skipped ones included)
        self.paced_taken = 0
        self._source: Iterator[object] | None = None
        self._t0 = 0.0
        self._base = 0
        self._next = 0  # the live member served first in the next poll
        self._ids: dict[str, list[int]] = {}  # a live member's subscribed instruments
        self._halted: dict[str, bool] = {}  # live members seen connected: halted now?

    @property
    def gaps(self) -> int:
        return sum(int(getattr(m, "gaps", 0)) for m in self.members)

    # --- MarketDataClient ------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect every member (a replay that cannot be read raises ``ValueError``; a venue
        that is down does not: it keeps trying on its own)."""
        for m in self.members:
            m.connect()

    def instruments(self) -> list[InstrumentRules]:
        return [r for m in self.members for r in m.instruments()]

    def subscribe(self, instrument_ids: Iterable[int]) -> None:
        """Each member is asked for the instruments it lists."""
        want = {int(i) for i in instrument_ids}
        for m in self.members:
            mine = [
                r.instrument.instrument_id
                for r in m.instruments()
                if r.instrument.instrument_id in want
            ]
            m.subscribe(mine)
            if is_live(m):
                self._ids[m.name] = mine
        if self.paced is not None:
            self._source = iter(self.paced.updates())

    def skip_paced(self, n: int) -> int:
        """Drop the first ``n`` messages of the paced member (a restarted feed: they were
        published before); returns how many were dropped."""
        src = self._source
        k = 0
        while src is not None and k < n and next(src, None) is not None:
            k += 1
        self.paced_taken += k
        self._base = self.paced_taken
        return k

    def poll_updates(self, max_n: int = 512) -> list[object]:
        """The paced messages due by now, then what the live members delivered (at most
        ``max_n`` in all); never waits."""
        out: list[object] = []
        if self._source is not None:
            now = time.monotonic()
            if not self._t0:
                self._t0 = now
            due = self._base + int((now - self._t0) * self.rate) - self.paced_taken
            if due > 0:
                self._take_paced(out, min(due, max_n))
        lives = self.lives
        for m in lives:
            self._watch(m, out)
        if lives and len(out) < max_n:
            k = self._next % len(lives)
            self._next = k + 1
            for j in range(len(lives)):
                room = max_n - len(out)
                if room <= 0:
                    break
                share = max(1, room // (len(lives) - j))
                out += lives[(k + j) % len(lives)].poll_updates(share)
        return out

    def _watch(self, m: Any, out: list[object]) -> None:
        """Halt ``m``'s instruments when it goes down, reopen them when it is back."""
        st = m.state()
        was = self._halted.get(m.name)
        if was is None:  # not yet connected since this client started
            if st != "connected":
                return
            # OPEN at the first connect: an earlier feed may have halted it (a no-op otherwise)
            was = True
        if st == "down" and not was:
            why = f"market data down: {getattr(m, 'state_reason', '') or m.name}"
            kind = ExchangeStatusKind.HALTED
        elif st == "connected" and was:
            why, kind = "market data connected", ExchangeStatusKind.OPEN
        else:
            return
        self._halted[m.name] = not was
        now = time.time_ns()
        out += [ExchangeStatus(i, int(kind), why[:200], now, 0) for i in self._ids.get(m.name, [])]

    def _take_paced(self, out: list[object], n: int) -> None:
        src = self._source
        for _ in range(n):
            msg = next(src, None)  # type: ignore[arg-type]
            if msg is None:  # a finite source ended: the live venues go on
                self._source = None
                return
            self.paced_taken += 1
            out.append(msg)

    def updates(self) -> Iterator[object]:
        """The same messages as a blocking iterator (tests, tools): ends at ``close``."""
        while self.members:
            batch = self.poll_updates()
            if batch:
                yield from batch
            else:
                time.sleep(0.002)

    def close(self) -> None:
        for m in self.members:
            m.close()
        self.members = []
        self._source = None

    # --- status ----------------------------------------------------------------------------------
    def state(self) -> str:
        return worst_state(m.state() for m in self.lives)

    def states(self) -> dict[str, str]:
        """Each live member's state, by venue name."""
        return {m.name: m.state() for m in self.lives}

    def counters(self) -> dict[str, int]:
        out = {"gaps": 0, "resyncs": 0, "reconnects": 0}
        for m in self.lives:
            for k, v in m.counters().items():
                out[k] = out.get(k, 0) + int(v)
        return out
