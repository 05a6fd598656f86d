"""A seeded, reproducible synthetic market: correlated prices and L2 books for several instruments.

Why it exists (DESIGN §6): the default venue is a simulated exchange, and it needs a market to
match against that is available offline, runs on a simulated clock and is bit-for-bit
reproducible, so a backtest or a test that fails can be rerun to the same message. Real market
features that break naive strategies are built in on purpose:

- correlated returns (Cholesky factor of the correlation matrix): a risk model or a pairs strategy
  must see co-movement;
- volatility clustering (GARCH(1,1) per instrument): calm and turbulent regimes, so vol targeting
  and circuit breakers get exercised;
- jumps (Poisson arrivals, normal sizes): gaps that sweep several book levels at once;
- prices on the tick grid and always positive, books never crossed, spread at least one tick.

The model, per step (one step = one market event; inter-event times are exponential with mean
``mean_interval_ns``):

    h_t   = omega + alpha * e_{t-1}^2 + beta * h_{t-1}        (GARCH(1,1), per instrument)
    e_t   = sqrt(h_t) * z_t,   z_t = L @ n_t,  n_t ~ N(0, I)    (L = chol(correlation))
    x_t   = x_{t-1} + e_t + J_t,   J_t = sum of Poisson(rate * dt) jumps ~ N(mu_J, sd_J)
    mid_t = exp(x_t) / tick_size                                (float, in ticks)

This is the constant-conditional-correlation (CCC) GARCH model: the *conditional* correlation of
returns is exactly the configured one. The unconditional (sample) correlation is slightly lower
when GARCH is on, by the factor ``E[sqrt(h_i h_j)] / sqrt(E[h_i] E[h_j])`` because each
instrument's variance path is its own: about 0.99 with the default coefficients, about 0.94 with
a heavy-tailed (0.08, 0.90). Turn GARCH off (``GarchParams(0, 0)``) for exact correlation.

Volatility is in *event time*: every step has the same unconditional variance (``omega`` is set
so that ``omega / (1 - alpha - beta)`` equals the configured per-step variance). An annualised
volatility is converted with the mean step length. Jumps arrive in *calendar* (simulated) time.

The book around each mid: the touch is ``best_bid = floor(mid - spread/2 + 1/2)``,
``best_ask = best_bid + spread`` with a spread of 1, 2, 3... ticks that changes now and then;
deeper levels sit on a grid of ``level_gap_ticks``. Sizes are random lots. When the mid moves
through resting levels, those levels are *swept*: a Trade is printed at each swept level's price
(aggressor = the side that moved the price) and the level is removed. Besides moves, each step may
carry a random trade at the touch and a random size change at a random level, so the feed has
life even when the price is still.

Output per step and instrument, in this order, each with ``ts_event`` strictly increasing across
the whole market (1 ns apart within a step) and ``ts_recv = ts_event`` (the caller stamps its
own receive time): for each swept level a Trade then the BookDelta removing it, BookDeltas
cancelling stale levels, BookDeltas adding new levels, a random Trade and its BookDelta, a
size-change BookDelta, then one Quote if the top of book changed. Every Trade is therefore at the
touch of the book a consumer holds when it arrives, and removals come before additions so that a
consumer applying deltas one by one never sees a crossed book, even in between.

Sequence numbers, per instrument: the initial BookSnapshot carries ``seq = 0`` and the BookDeltas
are numbered 1, 2, 3, ... without gaps, because that is what a book consumer checks
(``engine.book.L2Book`` flags ``GAP`` whenever a delta's seq is not ``last_seq + 1``). A Quote
carries the seq of the last BookDelta it summarises (the book version it was taken from): Quote
seqs increase strictly but skip, and ``quote.seq == book.last_seq`` tells a consumer that its
book and the quote agree. Trades carry ``trade_id`` (1, 2, 3, ... per instrument) instead.

Speed: every random number is drawn in blocks with numpy (one ``Generator``, seeded) and consumed
from Python lists; the per-step work is a handful of dict operations per instrument. The same
seed and parameters always produce the identical message sequence.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.instruments import Instrument
from engine.messages import BookDelta, BookSnapshot, Quote, Side, Trade
from engine.sources.synthetic_kinds import BinaryGrid, OddsGrid, grid_for

#: Calendar seconds in a year: the simulated clock runs continuously (no sessions or weekends).
SECONDS_PER_YEAR = 365.25 * 86_400.0

_BUY = int(Side.BUY)  # plain ints on the wire: an IntEnum would cost a lookup downstream
_SELL = int(Side.SELL)
_BLOCK = 2048  # steps per block of pre-generated random numbers
_QTY_POOL = 8192  # random level sizes drawn per refill

MarketData = Quote | Trade | BookDelta | BookSnapshot


@dataclass(frozen=True)
class GarchParams:
    """GARCH(1,1) coefficients. ``alpha + beta < 1``; ``alpha = beta = 0`` gives constant vol.

    The defaults (0.05, 0.90) are in the range fitted to intraday and daily returns: persistent
    but mean-reverting volatility, with tails moderate enough that sample statistics (and the
    return correlation, see ``SyntheticMarket``) settle within a few thousand steps.
    """

    alpha: float = 0.05
    beta: float = 0.90

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta >= 1:
            raise ValueError(
                f"GARCH needs alpha >= 0, beta >= 0, alpha + beta < 1; got {self.alpha}, {self.beta}"
            )


@dataclass(frozen=True)
class JumpParams:
    """Poisson jumps in log price: ``rate_per_s`` arrivals per simulated second per instrument,
    each of size ~ N(``mean``, ``std``) in log return."""

    rate_per_s: float = 0.0
    mean: float = 0.0
    std: float = 0.01

    def __post_init__(self) -> None:
        if self.rate_per_s < 0 or self.std < 0:
            raise ValueError("jump rate and std must be >= 0")


@dataclass(frozen=True)
class InstrumentSpec:
    """One instrument of the synthetic market.

    Give exactly one of ``vol`` (standard deviation of log return per step) or ``annual_vol``
    (annualised, converted with the market's mean step length). ``garch`` overrides the market's
    default GARCH coefficients for this instrument.
    """

    instrument_id: int
    tick_size: float
    lot_size: float
    price: float
    vol: float | None = None
    annual_vol: float | None = None
    garch: GarchParams | None = None
    kind: str = "spot"  # engine.enums.InstrumentKind: binary and betting prices are bounded

    def __post_init__(self) -> None:
        if not (self.tick_size > 0 and self.lot_size > 0):
            raise ValueError(f"instrument {self.instrument_id}: tick and lot size must be > 0")
        if not (self.price > 0 and math.isfinite(self.price)):
            raise ValueError(f"instrument {self.instrument_id}: price must be positive")
        if (self.vol is None) == (self.annual_vol is None):
            raise ValueError(
                f"instrument {self.instrument_id}: give exactly one of vol or annual_vol"
            )
        v = self.vol if self.vol is not None else self.annual_vol
        assert v is not None
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"instrument {self.instrument_id}: volatility must be >= 0")

    @classmethod
    def from_instrument(
        cls,
        instrument: Instrument,
        price: float,
        *,
        vol: float | None = None,
        annual_vol: float | None = None,
        garch: GarchParams | None = None,
    ) -> InstrumentSpec:
        """Spec from an instrument definition, so tick and lot sizes have one source of truth."""
        return cls(
            instrument_id=instrument.instrument_id,
            tick_size=instrument.tick_size,
            lot_size=instrument.lot_size,
            price=price,
            vol=vol,
            annual_vol=annual_vol,
            garch=garch,
            kind=instrument.kind,
        )


class _Book:
    """Mutable per-instrument state. Plain slotted attributes: this is the hot loop's data."""

    __slots__ = (
        "iid",
        "tick",
        "x",
        "h",
        "e2",
        "omega",
        "alpha",
        "beta",
        "spread",
        "bids",
        "asks",
        "bid_px",
        "ask_px",
        "bb",
        "ba",
        "seq",
        "trade_id",
        "last_top",
        "grid",
    )

    def __init__(
        self, iid: int, tick: float, log_px: float, var: float, garch: GarchParams, spread: int
    ) -> None:
        self.iid = iid
        self.tick = tick
        self.x = log_px  # latent log price
        self.h = var  # GARCH conditional variance, starts at the unconditional one
        self.e2 = var  # last squared shock
        self.alpha = garch.alpha
        self.beta = garch.beta
        self.omega = var * (1.0 - garch.alpha - garch.beta)
        self.spread = spread  # ticks
        self.bids: dict[int, int] = {}  # px -> qty
        self.asks: dict[int, int] = {}
        self.bid_px: list[int] = []  # level prices, best first
        self.ask_px: list[int] = []
        self.bb = 0  # best bid / ask
        self.ba = 0
        self.seq = 0  # last BookDelta seq
        self.trade_id = 0
        self.last_top: tuple[int, int, int, int] = (0, 0, 0, 0)  # as last sent in a Quote
        #: a bounded kind's prices (engine.sources.synthetic_kinds); None: exp(x), any > 0
        self.grid: BinaryGrid | OddsGrid | None = None


def _check_args(
    ids: list[int],
    mean_interval_ns: int,
    sizes: tuple[int, int, int],
    probs: np.ndarray,
    probabilities: dict[str, float],
) -> None:
    """``SyntheticMarket``'s arguments: ValueError naming the first bad one."""
    if not ids:
        raise ValueError("SyntheticMarket needs at least one instrument")
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate instrument ids in {ids}")
    if mean_interval_ns < 1:
        raise ValueError("mean_interval_ns must be >= 1")
    if min(sizes) < 1:
        raise ValueError("levels, level_gap_ticks and max_qty_lots must be >= 1")
    if probs.ndim != 1 or len(probs) == 0 or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError("spread_probs must be a non-empty list of non-negative weights")
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]")


class SyntheticMarket:
    """Reproducible multi-instrument market data generator on a simulated clock.

    ``step()`` returns the messages of one market event (the first call returns the initial
    BookSnapshots); ``events(n)`` yields exactly ``n`` messages, carrying over the rest of a step
    to the next call. ``now_ns`` is the simulated time of the last emitted message.
    """

    def __init__(
        self,
        instruments: Sequence[InstrumentSpec],
        correlation: float | Sequence[Sequence[float]] | np.ndarray = 0.0,
        *,
        seed: int = 0,
        mean_interval_ns: int = 1_000_000,
        levels: int = 10,
        jumps: JumpParams | None = None,
        garch: GarchParams | None = None,
        start_ns: int = 0,
        level_gap_ticks: int = 1,
        max_qty_lots: int = 100,
        spread_probs: Sequence[float] = (0.6, 0.25, 0.15),
        spread_change_prob: float = 0.05,
        trade_prob: float = 0.2,
        update_prob: float = 0.5,
    ) -> None:
        ids = [s.instrument_id for s in instruments]
        probs = np.asarray(spread_probs, dtype=float)
        _check_args(
            ids,
            mean_interval_ns,
            (levels, level_gap_ticks, max_qty_lots),
            probs,
            {
                "spread_change_prob": spread_change_prob,
                "trade_prob": trade_prob,
                "update_prob": update_prob,
            },
        )

        n = len(instruments)
        self.specs: tuple[InstrumentSpec, ...] = tuple(instruments)
        self.instrument_ids: tuple[int, ...] = tuple(ids)
        self.correlation = _correlation_matrix(correlation, n)
        try:
            self._chol = np.linalg.cholesky(self.correlation)
        except np.linalg.LinAlgError:
            raise ValueError("correlation matrix is not positive definite") from None
        self.mean_interval_ns = int(mean_interval_ns)
        self.levels = int(levels)
        self.level_gap = int(level_gap_ticks)
        self.max_qty = int(max_qty_lots)
        self.jumps = jumps if jumps is not None and jumps.rate_per_s > 0 else None
        self._spread_cdf = (np.cumsum(probs) / probs.sum()).tolist()
        self._spread_cdf[-1] = 1.0
        self._p_spread = float(spread_change_prob)
        self._p_trade = float(trade_prob)
        self._p_update = float(update_prob)

        seeds = np.random.SeedSequence(seed).spawn(2)
        self._rng = np.random.Generator(np.random.PCG64(seeds[0]))
        self._qty_rng = np.random.Generator(np.random.PCG64(seeds[1]))
        self._qty_pool: list[int] = []
        self._qty_i = 0

        self._books = self._make_books(garch if garch is not None else GarchParams())

        self._block: list[tuple[int, list[float], list[float], list[list[float]]]] = []
        self._block_i = 0
        self._started = False
        self._start_ns = int(start_ns)
        self._t = int(start_ns)  # time of the last emitted message
        self._pending: list[MarketData] = []

    def _make_books(self, default_garch: GarchParams) -> list[_Book]:
        """One book per instrument: its per-step variance, GARCH parameters and first spread
        (drawn in instrument order: the stream depends on it)."""
        step_s = self.mean_interval_ns * 1e-9
        books: list[_Book] = []
        for spec in self.specs:
            if spec.vol is not None:
                sigma = spec.vol
            else:
                assert spec.annual_vol is not None
                sigma = spec.annual_vol * math.sqrt(step_s / SECONDS_PER_YEAR)
            grid = grid_for(spec.kind, spec.tick_size)
            book = _Book(
                spec.instrument_id,
                spec.tick_size,
                math.log(spec.price) if grid is None else grid.latent(spec.price),
                sigma * sigma,
                spec.garch if spec.garch is not None else default_garch,
                self._draw_spread(float(self._rng.random())),
            )
            book.grid = grid
            books.append(book)
        return books

    # --- public API ---------------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        """The simulated clock: ``ts_event`` of the last message of the last step (a quiet step
        still advances it). ``events()`` may hold the rest of a step back, already stamped."""
        return self._t

    def step(self) -> list[MarketData]:
        """One market event: messages for every instrument whose book or trades changed.

        The first call returns the initial BookSnapshot of each instrument and nothing else.
        """
        if not self._started:
            return self._start()
        if self._block_i >= len(self._block):
            self._refill_block()
        dt, z, jump, u = self._block[self._block_i]
        self._block_i += 1
        t = self._t + dt
        out: list[MarketData] = []
        for i, b in enumerate(self._books):
            t = self._step_book(b, z[i], jump[i], u[i], t, out)
        self._t = t - 1 if out else self._t + dt
        return out

    def events(self, n: int) -> Iterator[MarketData]:
        """Yield exactly ``n`` messages; a step's remainder is kept for the next call."""
        pending = self._pending
        while n > 0:
            if not pending:
                pending.extend(self.step())
                pending.reverse()  # pop() from the end is O(1)
                continue
            yield pending.pop()
            n -= 1

    def __iter__(self) -> Iterator[MarketData]:
        """An endless message stream (shares position with ``events``)."""
        while True:
            yield from self.events(1 << 20)

    def snapshot(self, instrument_id: int) -> BookSnapshot:
        """The current book of one instrument, stamped with its current ``seq`` and ``now_ns``,
        for a consumer that joins late (apply deltas with ``seq`` greater than this one)."""
        for b in self._books:
            if b.iid == instrument_id:
                return self._snapshot(b, self._t)
        raise KeyError(f"unknown instrument id {instrument_id}")

    def mid_ticks(self, instrument_id: int) -> float:
        """The latent (unrounded) mid price in ticks: what the book is built around."""
        for b in self._books:
            if b.iid == instrument_id:
                return math.exp(b.x) / b.tick if b.grid is None else b.grid.mid(b.x)
        raise KeyError(f"unknown instrument id {instrument_id}")

    # --- internals ----------------------------------------------------------------------------

    def _start(self) -> list[MarketData]:
        self._started = True
        out: list[MarketData] = []
        t = self._start_ns
        for b in self._books:
            bb, ba = self._book_touch(b)
            b.bb, b.ba = bb, ba
            b.bid_px = self._levels(b, bb, -1)
            b.ask_px = self._levels(b, ba, +1)
            b.bids = {px: self._qty() for px in b.bid_px}
            b.asks = {px: self._qty() for px in b.ask_px}
            b.last_top = (bb, b.bids[bb], ba, b.asks[ba])
            out.append(self._snapshot(b, t))
            t += 1
        self._t = t - 1
        return out

    def _snapshot(self, b: _Book, t: int) -> BookSnapshot:
        return BookSnapshot(
            b.iid,
            list(b.bid_px),
            [b.bids[p] for p in b.bid_px],
            list(b.ask_px),
            [b.asks[p] for p in b.ask_px],
            t,
            t,
            b.seq,
        )

    def _qty(self) -> int:
        """A random level size in lots, from a pre-drawn pool (its own RNG stream)."""
        i = self._qty_i
        if i >= len(self._qty_pool):
            self._qty_pool = self._qty_rng.integers(1, self.max_qty + 1, _QTY_POOL).tolist()
            i = 0
        self._qty_i = i + 1
        return self._qty_pool[i]

    def _draw_spread(self, v: float) -> int:
        """Spread in ticks for a uniform draw ``v``: 1 + the index of its ``spread_probs`` bucket."""
        for k, c in enumerate(self._spread_cdf):
            if v < c:  # zero-weight buckets have c equal to the previous one: never picked
                return k + 1
        return len(self._spread_cdf)

    def _book_touch(self, b: _Book) -> tuple[int, int]:
        """Best bid/ask of the book's latent price (a bounded kind: on its grid)."""
        if b.grid is None:
            return self._touch(b, math.exp(b.x) / b.tick)
        return b.grid.touch(b.x, b.spread)

    def _levels(self, b: _Book, touch: int, direction: int) -> list[int]:
        """Level prices best first (a bounded kind: on its grid, within its bounds)."""
        if b.grid is None:
            return self._ladder(touch, direction)
        return b.grid.ladder(touch, direction, self.levels, self.level_gap)

    def _touch(self, b: _Book, m: float) -> tuple[int, int]:
        """Best bid/ask for a mid of ``m`` ticks; the best bid is kept at >= 1 tick."""
        s = b.spread
        bb = math.floor(m - s * 0.5 + 0.5)
        if bb < 1:
            bb = 1
        return bb, bb + s

    def _ladder(self, touch: int, direction: int) -> list[int]:
        """Level prices best first: the touch, then the ``level_gap`` grid away from it.

        Anchoring deep levels to an absolute grid (not to the touch) keeps them in place while
        the touch moves, so a one-tick move costs a few deltas rather than a whole new book.
        Bid levels that would be at or below zero are left out: prices stay positive.
        """
        g = self.level_gap
        px = [touch]
        if direction < 0:
            p = ((touch - 1) // g) * g
            while len(px) < self.levels and p > 0:
                px.append(p)
                p -= g
        else:
            p = ((touch + 1 + g - 1) // g) * g
            while len(px) < self.levels:
                px.append(p)
                p += g
        return px

    def _refill_block(self) -> None:
        """Draw the next ``_BLOCK`` steps of randomness at once (numpy is fast in bulk only)."""
        rng = self._rng
        n = len(self._books)
        dt = np.maximum(1, np.rint(rng.exponential(self.mean_interval_ns, _BLOCK))).astype(np.int64)
        z = rng.standard_normal((_BLOCK, n)) @ self._chol.T
        if self.jumps is not None:
            j = self.jumps
            lam = (dt * 1e-9 * j.rate_per_s)[:, None]
            k = rng.poisson(np.broadcast_to(lam, (_BLOCK, n)))
            jump = k * j.mean + np.sqrt(k) * j.std * rng.standard_normal((_BLOCK, n))
        else:
            jump = np.zeros((_BLOCK, n))
        # uniforms: spread change?, new spread, trade?, trade side, trade qty, update?, which level
        u = rng.random((_BLOCK, n, 7))
        self._block = list(zip(dt.tolist(), z.tolist(), jump.tolist(), u.tolist(), strict=True))
        self._block_i = 0

    def _step_book(
        self, b: _Book, z: float, jump: float, u: list[float], t: int, out: list[MarketData]
    ) -> int:
        """Advance one instrument by one step, appending its messages; returns the next ts."""
        # price: GARCH(1,1) diffusion + jumps, in log space (so the price stays positive)
        h = b.omega + b.alpha * b.e2 + b.beta * b.h
        e = math.sqrt(h) * z
        b.h = h
        b.e2 = e * e
        b.x += e + jump
        if u[0] < self._p_spread:
            b.spread = self._draw_spread(u[1])
        iid = b.iid
        bids, asks = b.bids, b.asks
        bb, ba = self._book_touch(b)

        if bb != b.bb or ba != b.ba:
            t = self._move(b, bb, ba, t, out)

        # a random trade at the touch; a fully taken level is refilled at the same price
        if u[2] < self._p_trade:
            if u[3] < 0.5:
                side, book, px = _BUY, asks, b.ba
            else:
                side, book, px = _SELL, bids, b.bb
            q = book[px]
            tq = 1 + int(u[4] * q)
            if tq > q:
                tq = q
            b.trade_id += 1
            out.append(Trade(iid, px, tq, side, t, t, b.trade_id))
            t += 1
            left = q - tq
            if left == 0:
                left = self._qty()
            book[px] = left
            b.seq += 1
            out.append(BookDelta(iid, -side, px, left, t, t, b.seq))
            t += 1

        # a random size change (add or cancel) at a random level
        if u[5] < self._p_update:
            v = u[6] * 2.0
            if v < 1.0:
                side, book, pxs = _BUY, bids, b.bid_px
            else:
                side, book, pxs = _SELL, asks, b.ask_px
                v -= 1.0
            px = pxs[int(v * len(pxs))]
            q = self._qty()
            if q != book[px]:
                book[px] = q
                b.seq += 1
                out.append(BookDelta(iid, side, px, q, t, t, b.seq))
                t += 1

        top = (b.bb, bids[b.bb], b.ba, asks[b.ba])
        if top != b.last_top:
            b.last_top = top
            out.append(Quote(iid, top[0], top[1], top[2], top[3], t, t, b.seq))
            t += 1
        return t

    def _move(self, b: _Book, bb: int, ba: int, t: int, out: list[MarketData]) -> int:
        """Move the touch to (bb, ba): sweep crossed levels, drop stale ones, add new ones.

        Each swept level prints its Trade immediately followed by the BookDelta removing it, so
        every Trade is at the touch of the book a consumer holds at that moment.
        """
        iid = b.iid
        bids, asks = b.bids, b.asks
        new_bid_px = self._levels(b, bb, -1)
        new_ask_px = self._levels(b, ba, +1)
        if ba > b.ba:  # buyers lifted every offer below the new best ask
            for px in b.ask_px:
                if px >= ba:
                    break
                b.trade_id += 1
                out.append(Trade(iid, px, asks.pop(px), _BUY, t, t, b.trade_id))
                b.seq += 1
                out.append(BookDelta(iid, _SELL, px, 0, t + 1, t + 1, b.seq))
                t += 2
        if bb < b.bb:  # sellers hit every bid above the new best bid
            for px in b.bid_px:
                if px <= bb:
                    break
                b.trade_id += 1
                out.append(Trade(iid, px, bids.pop(px), _SELL, t, t, b.trade_id))
                b.seq += 1
                out.append(BookDelta(iid, _BUY, px, 0, t + 1, t + 1, b.seq))
                t += 2
        # stale levels (deeper than the new ladder, or inside the new spread) are cancelled;
        # all removals go before any addition so the book is never crossed, even in between
        new_bids = set(new_bid_px)
        new_asks = set(new_ask_px)
        for px in b.bid_px:
            if px in bids and px not in new_bids:
                del bids[px]
                b.seq += 1
                out.append(BookDelta(iid, _BUY, px, 0, t, t, b.seq))
                t += 1
        for px in b.ask_px:
            if px in asks and px not in new_asks:
                del asks[px]
                b.seq += 1
                out.append(BookDelta(iid, _SELL, px, 0, t, t, b.seq))
                t += 1
        for px in new_bid_px:
            if px not in bids:
                q = self._qty()
                bids[px] = q
                b.seq += 1
                out.append(BookDelta(iid, _BUY, px, q, t, t, b.seq))
                t += 1
        for px in new_ask_px:
            if px not in asks:
                q = self._qty()
                asks[px] = q
                b.seq += 1
                out.append(BookDelta(iid, _SELL, px, q, t, t, b.seq))
                t += 1
        b.bid_px, b.ask_px, b.bb, b.ba = new_bid_px, new_ask_px, bb, ba
        return t


def _correlation_matrix(
    correlation: float | Sequence[Sequence[float]] | np.ndarray, n: int
) -> np.ndarray:
    """A full correlation matrix from a single pairwise value or a matrix, validated."""
    if np.isscalar(correlation):
        rho = float(correlation)  # type: ignore[arg-type]
        if not -1.0 < rho < 1.0 and n > 1:
            raise ValueError(f"pairwise correlation must be in (-1, 1); got {rho}")
        c = np.full((n, n), rho)
        np.fill_diagonal(c, 1.0)
        return c
    c = np.asarray(correlation, dtype=float)
    if c.shape != (n, n):
        raise ValueError(f"correlation matrix must be {n}x{n}; got shape {c.shape}")
    if not np.allclose(c, c.T) or not np.allclose(np.diag(c), 1.0) or (np.abs(c) > 1).any():
        raise ValueError("correlation matrix must be symmetric with unit diagonal, |rho| <= 1")
    return c
