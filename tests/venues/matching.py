"""Matching for the local exchange servers: instruments, orders, fills, balances, the books.

A price-time-priority book per symbol holds our resting orders beside a seeded "market"
liquidity (owned by the ``MARKET`` account: unlimited balances, no events), so market and
marketable orders really fill. Balances are free/locked per asset; fees are taken in the
received asset (a buy pays in base, a sell in quote), like Binance without BNB, or all in the
quote asset (``Matcher.fee_in_quote``, Coinbase). All money math is Decimal; nothing here
knows an exchange: each server maps ``Reject.kind`` and the order events to its own wire
format. Everything runs on the server's loop thread.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.venues.core import Faults

D0 = Decimal(0)
MARKET = "__market__"  # the account that owns the seeded liquidity: unlimited balances, no events


def now_ms() -> int:
    return int(time.time() * 1000)


def dec(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def round_down(x: Decimal, step: Decimal) -> Decimal:
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


def fmt(x: Decimal, places: int | None = None) -> str:
    """A plain decimal string (no exponent); ``places`` fixes the digits after the point."""
    if places is not None:
        return f"{x:.{places}f}"
    s = f"{x.normalize():f}"
    return s


# ---------------------------------------------------------------------------------------------
# instruments, orders, fills


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str = "BTC/USDT"  # ccxt unified symbol
    venue_symbol: str = "BTCUSDT"  # the exchange's own name
    base: str = "BTC"
    quote: str = "USDT"
    tick: str = "0.01"
    lot: str = "0.00001"
    min_notional: str = "5"
    status: str = "TRADING"
    min_qty: str = ""  # "" = one lot
    max_qty: str = "9000"

    @property
    def tick_d(self) -> Decimal:
        return Decimal(self.tick)

    @property
    def lot_d(self) -> Decimal:
        return Decimal(self.lot)

    @property
    def min_notional_d(self) -> Decimal:
        return Decimal(self.min_notional)

    @property
    def min_qty_d(self) -> Decimal:
        return Decimal(self.min_qty or self.lot)


class Reject(Exception):
    """A refused request; ``kind`` is neutral, each server maps it to its exchange's error."""

    KINDS = (
        "unknown_symbol",
        "symbol_halted",
        "filter_price",
        "filter_lot",
        "min_notional",
        "insufficient_balance",
        "post_only_would_take",
        "duplicate_client_id",
        "unknown_order",
        "bad_request",
    )

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message or kind


@dataclass
class Fill:
    trade_id: int
    order: Order
    price: Decimal
    qty: Decimal
    fee: Decimal
    fee_currency: str
    maker: bool
    ts_ms: int

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass
class Order:
    order_id: int
    client_id: str
    account: str
    spec: SymbolSpec
    side: str  # "buy" | "sell"
    type: str  # "limit" | "market"
    amount: Decimal  # base quantity ordered (a market buy by quote amount: filled when done)
    price: Decimal | None = None
    tif: str = "GTC"  # GTC | IOC | FOK
    post_only: bool = False
    quote_amount: Decimal | None = None  # market buy by quote spend (quoteOrderQty, quote_size)
    status: str = "open"  # open | closed | canceled | expired | rejected
    filled: Decimal = D0
    cost: Decimal = D0  # quote value filled
    fee: Decimal = D0
    fee_currency: str = ""
    created_ms: int = field(default_factory=now_ms)
    updated_ms: int = field(default_factory=now_ms)
    fills: list[Fill] = field(default_factory=list)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))  # for venues whose ids are UUIDs
    locked: Decimal = D0  # what this order still holds locked (quote for buys, base for sells)
    extra: dict[str, Any] = field(default_factory=dict)  # per-exchange fields (e.g. userref)

    @property
    def symbol(self) -> str:
        return self.spec.symbol

    @property
    def remaining(self) -> Decimal:
        return max(self.amount - self.filled, D0)

    @property
    def average(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None

    @property
    def is_open(self) -> bool:
        return self.status == "open"


# ---------------------------------------------------------------------------------------------
# balances


class Account:
    """Balances per asset, free and locked. The ``MARKET`` account's balances are unlimited."""

    def __init__(self, name: str, balances: dict[str, Any] | None = None) -> None:
        self.name = name
        self.free: dict[str, Decimal] = {}
        self.locked: dict[str, Decimal] = {}
        for asset, amount in (balances or {}).items():
            self.deposit(asset, amount)

    @property
    def unlimited(self) -> bool:
        return self.name == MARKET

    def deposit(self, asset: str, amount: Any) -> None:
        self.free[asset] = self.free.get(asset, D0) + dec(amount)
        self.locked.setdefault(asset, D0)

    def total(self, asset: str) -> Decimal:
        return self.free.get(asset, D0) + self.locked.get(asset, D0)

    def assets(self) -> list[str]:
        return sorted(set(self.free) | set(self.locked))

    def lock(self, asset: str, amount: Decimal) -> None:
        if self.unlimited:
            return
        if self.free.get(asset, D0) < amount:
            raise Reject(
                "insufficient_balance", f"{asset} free {self.free.get(asset, D0)} < {amount}"
            )
        self.free[asset] -= amount
        self.locked[asset] = self.locked.get(asset, D0) + amount

    def unlock(self, asset: str, amount: Decimal) -> None:
        if self.unlimited or not amount:
            return
        self.locked[asset] = self.locked.get(asset, D0) - amount
        self.free[asset] = self.free.get(asset, D0) + amount

    def spend_locked(self, asset: str, amount: Decimal) -> None:
        if not self.unlimited:
            self.locked[asset] = self.locked.get(asset, D0) - amount

    def receive(self, asset: str, amount: Decimal) -> None:
        if not self.unlimited:
            self.free[asset] = self.free.get(asset, D0) + amount
            self.locked.setdefault(asset, D0)


# ---------------------------------------------------------------------------------------------
# the book and the matcher


class _Side:
    """One side of one book: price levels in price-time priority."""

    def __init__(self, is_bid: bool) -> None:
        self.is_bid = is_bid
        self.prices: list[Decimal] = []  # ascending
        self.levels: dict[Decimal, deque[Order]] = {}

    def best(self) -> Decimal | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def iter_prices(self) -> Iterable[Decimal]:
        return reversed(self.prices) if self.is_bid else iter(self.prices)

    def add(self, order: Order) -> None:
        px = order.price
        assert px is not None
        q = self.levels.get(px)
        if q is None:
            q = self.levels[px] = deque()
            bisect.insort(self.prices, px)
        q.append(order)

    def remove(self, order: Order) -> None:
        q = self.levels.get(order.price)  # type: ignore[arg-type]
        if q is None:
            return
        with contextlib.suppress(ValueError):
            q.remove(order)
        if not q:
            self._drop(order.price)  # type: ignore[arg-type]

    def _drop(self, px: Decimal) -> None:
        del self.levels[px]
        i = bisect.bisect_left(self.prices, px)
        del self.prices[i]

    def crosses(self, px: Decimal | None, taker_is_buy: bool) -> bool:
        """Whether the best level here would trade with a taker limited at ``px``."""
        best = self.best()
        if best is None:
            return False
        if px is None:
            return True
        return best <= px if taker_is_buy else best >= px

    def depth(self, limit: int | None = None) -> list[tuple[Decimal, Decimal]]:
        out: list[tuple[Decimal, Decimal]] = []
        for px in self.iter_prices():
            out.append((px, sum((o.remaining for o in self.levels[px]), D0)))
            if limit is not None and len(out) >= limit:
                break
        return out


class Book:
    def __init__(self, spec: SymbolSpec) -> None:
        self.spec = spec
        self.bids = _Side(True)
        self.asks = _Side(False)
        self.market_levels: dict[tuple[str, Decimal], Order] = {}  # (side, px) -> pseudo order

    def side(self, side: str) -> _Side:
        return self.bids if side == "buy" else self.asks

    def opposite(self, side: str) -> _Side:
        return self.asks if side == "buy" else self.bids

    def depth(self, limit: int | None = None) -> dict[str, list[tuple[Decimal, Decimal]]]:
        return {"bids": self.bids.depth(limit), "asks": self.asks.depth(limit)}


# listener(event, order, fill): event in new | trade | canceled | expired | amended | rejected
OrderListener = Callable[[str, Order, Fill | None], None]


class Matcher:
    """Books for a set of symbols, matching in price-time priority; fees in the received asset.

    ``faults`` (optional) is consulted for ``partial_fill`` (the next taking order fills in
    ``parts`` trades). Every change to an order of a non-MARKET account goes to the listeners.
    """

    def __init__(
        self,
        specs: Iterable[SymbolSpec],
        maker_fee: str = "0.001",
        taker_fee: str = "0.001",
        faults: Faults | None = None,
        first_order_id: int = 1000,
        first_trade_id: int = 5000,
        fee_places: int = 8,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.by_venue_symbol = {s.venue_symbol: s for s in self.specs.values()}
        self.books = {s.symbol: Book(s) for s in self.specs.values()}
        self.maker_fee = Decimal(maker_fee)
        self.taker_fee = Decimal(taker_fee)
        self.faults = faults
        self.fee_step = Decimal(1).scaleb(-fee_places)  # fees rounded half-up to this, as venues do
        # True: every fee is charged in the quote asset, on top of a buy's cost (Coinbase);
        # a buy then holds its cost plus the larger fee rate. False: in the received asset.
        self.fee_in_quote = False
        self.accounts: dict[str, Account] = {MARKET: Account(MARKET)}
        self.orders: dict[int, Order] = {}
        self.by_client: dict[tuple[str, str], Order] = {}
        self.submitted: Counter[str] = Counter()  # client order id -> order entries seen
        self.trades: list[Fill] = []  # every fill of a non-MARKET account, in order
        self.listeners: list[OrderListener] = []
        self._order_ids = itertools.count(first_order_id)
        self._trade_ids = itertools.count(first_trade_id)

    # -- accounts and lookups
    def account(self, name: str, balances: dict[str, Any] | None = None) -> Account:
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(name, balances)
        elif balances:
            for asset, amount in balances.items():
                acct.deposit(asset, amount)
        return acct

    def spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol) or self.by_venue_symbol.get(symbol)
        if spec is None:
            raise Reject("unknown_symbol", f"unknown symbol {symbol}")
        return spec

    def find(self, account: str, order_id: Any = None, client_id: str | None = None) -> Order:
        order: Order | None = None
        if order_id not in (None, ""):
            with contextlib.suppress(ValueError, TypeError):
                order = self.orders.get(int(order_id))
            if order is None:  # a UUID id
                order = next((o for o in self.orders.values() if o.uid == order_id), None)
        elif client_id:
            order = self.by_client.get((account, client_id))
        if order is None or order.account != account:
            raise Reject("unknown_order", "Order does not exist.")
        return order

    def open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if o.account == account and o.is_open and (symbol is None or o.symbol == symbol)
        ]

    def account_trades(self, account: str, symbol: str | None = None) -> list[Fill]:
        return [
            f
            for f in self.trades
            if f.order.account == account and (symbol is None or f.order.symbol == symbol)
        ]

    def _emit(self, event: str, order: Order, fill: Fill | None = None) -> None:
        if order.account == MARKET:
            return
        for listener in list(self.listeners):
            listener(event, order, fill)

    # -- market liquidity
    def seed(
        self, symbol: str, bids: Iterable[tuple[Any, Any]], asks: Iterable[tuple[Any, Any]]
    ) -> None:
        """Replace the MARKET liquidity of ``symbol`` with these levels (our orders stay)."""
        book = self.books[self.spec(symbol).symbol]
        for (side, px), order in list(book.market_levels.items()):
            book.side(side).remove(order)
            del book.market_levels[(side, px)]
        for px, qty in bids:
            self.set_level(symbol, "buy", px, qty)
        for px, qty in asks:
            self.set_level(symbol, "sell", px, qty)

    def set_level(self, symbol: str, side: str, price: Any, qty: Any) -> list[Fill]:
        """Set the MARKET quantity at one level (0 removes it), as a depth diff does.

        New liquidity that crosses our resting orders trades with them first (the market
        moved through them); the rest rests. Returns the fills of our orders.
        """
        spec = self.spec(symbol)
        book = self.books[spec.symbol]
        px, qty = dec(price), dec(qty)
        key = (side, px)
        current = book.market_levels.get(key)
        if current is not None:
            if qty <= 0:
                book.side(side).remove(current)
                del book.market_levels[key]
            else:
                current.amount = current.filled + qty  # keeps its place in the queue
            return []
        if qty <= 0:
            return []
        taker = Order(0, "", MARKET, spec, side, "limit", qty, px)
        fills = self._match(book, taker, self._taker_split(None))
        if taker.remaining > 0:
            taker.order_id = next(self._order_ids)
            book.side(side).add(taker)
            book.market_levels[key] = taker
        return fills

    def take(self, symbol: str, side: str, qty: Any, price: Any = None) -> list[Fill]:
        """A MARKET participant's order taking liquidity (fills our resting orders first if best)."""
        spec = self.spec(symbol)
        order = Order(
            next(self._order_ids),
            "",
            MARKET,
            spec,
            side,
            "market" if price is None else "limit",
            dec(qty),
            None if price is None else dec(price),
            tif="IOC",
        )
        return self._match(self.books[spec.symbol], order, None)

    def fill_resting(self, order: Order, qty: Any = None) -> Fill:
        """The market trades with one of our resting orders at its price (``qty`` or all of it)."""
        if not order.is_open or order.type != "limit":
            raise Reject("unknown_order", "Unknown order sent.")
        q = order.remaining if qty is None else min(dec(qty), order.remaining)
        ts = now_ms()
        fill = self._fill(order, order.price, q, True, ts)  # type: ignore[arg-type]
        if order.remaining <= 0:
            self.books[order.symbol].side(order.side).remove(order)
        return fill

    # -- order entry
    def validate(self, order: Order) -> None:
        spec = order.spec
        if spec.status != "TRADING":
            raise Reject("symbol_halted", f"{spec.symbol} is {spec.status}")
        if order.price is not None and (order.price <= 0 or order.price % spec.tick_d):
            raise Reject("filter_price", f"price {order.price} not a multiple of {spec.tick}")
        if order.quote_amount is None and (
            order.amount < spec.min_qty_d
            or order.amount % spec.lot_d
            or order.amount > dec(spec.max_qty)
        ):
            raise Reject("filter_lot", f"quantity {order.amount} breaks lot {spec.lot}")
        ref = order.price if order.price is not None else self.reference_price(order)
        notional = (
            order.quote_amount if order.quote_amount is not None else order.amount * (ref or D0)
        )
        if ref is not None and notional < spec.min_notional_d:
            raise Reject("min_notional", f"notional {notional} < {spec.min_notional}")

    def reference_price(self, order: Order) -> Decimal | None:
        book = self.books[order.spec.symbol]
        return book.opposite(order.side).best() or book.side(order.side).best()

    def submit(self, account: str, order: Order) -> list[Fill]:
        """Validate, lock, match, rest or expire ``order``; returns its fills. Raises Reject."""
        if order.account != account:
            order.account = account
        acct = self.account(account)
        self.submitted[order.client_id] += 1
        if order.client_id and (account, order.client_id) in self.by_client:
            prior = self.by_client[(account, order.client_id)]
            if prior.is_open:
                raise Reject("duplicate_client_id", "Duplicate order sent.")
        self.validate(order)
        book = self.books[order.spec.symbol]
        if order.post_only and book.opposite(order.side).crosses(order.price, order.side == "buy"):
            raise Reject("post_only_would_take", "Order would immediately match and take.")
        self._lock_for(acct, book, order)
        if order.tif == "FOK" and self._fillable(book, order) < order.amount:
            self._release(acct, order)
            order.status = "expired"
            self._register(order)
            self._emit("new", order)
            self._emit("expired", order)
            return []
        self._register(order)
        self._emit("new", order)
        fills = self._match(book, order, self._taker_split(order))
        if order.remaining > 0 and order.status == "open":
            if order.type == "limit" and order.tif == "GTC":
                book.side(order.side).add(order)
            else:
                self._release(acct, order)
                order.status = "expired"
                self._emit("expired", order)
        return fills

    def _register(self, order: Order) -> None:
        if not order.order_id:
            order.order_id = next(self._order_ids)
        self.orders[order.order_id] = order
        if order.client_id:
            self.by_client[(order.account, order.client_id)] = order

    def _lock_asset(self, order: Order) -> tuple[str, Decimal]:
        return (
            (order.spec.quote, order.locked)
            if order.side == "buy"
            else (order.spec.base, order.locked)
        )

    def _lock_for(self, acct: Account, book: Book, order: Order) -> None:
        spec = order.spec
        if order.side == "sell":
            need, asset = order.amount, spec.base
        elif order.type == "limit":
            need, asset = self._buy_hold(order.amount * order.price), spec.quote  # type: ignore[operator]
        elif order.quote_amount is not None:
            need, asset = self._buy_hold(order.quote_amount), spec.quote
        else:
            need, asset = self._buy_hold(self._cost(book, order.amount)), spec.quote
        acct.lock(asset, need)
        order.locked = need

    def _buy_hold(self, cost: Decimal) -> Decimal:
        """What a buy of quote value ``cost`` holds: the cost, plus the fee when paid in quote."""
        if not self.fee_in_quote:
            return cost
        return cost * (1 + max(self.maker_fee, self.taker_fee))

    def _cost(self, book: Book, qty: Decimal) -> Decimal:
        """The quote cost of buying ``qty`` from the asks now (a market buy's lock)."""
        cost, left = D0, qty
        for px in book.asks.iter_prices():
            for o in book.asks.levels[px]:
                q = min(left, o.remaining)
                cost += q * px
                left -= q
                if left <= 0:
                    return cost
        return cost

    def _fillable(self, book: Book, order: Order) -> Decimal:
        """How much of ``order`` the opposite side could fill now (FOK)."""
        side, total = book.opposite(order.side), D0
        for px in side.iter_prices():
            if order.price is not None and (
                px > order.price if order.side == "buy" else px < order.price
            ):
                break
            total += sum((o.remaining for o in side.levels[px]), D0)
        return total

    def _release(self, acct: Account, order: Order) -> None:
        asset, amount = self._lock_asset(order)
        acct.unlock(asset, amount)
        order.locked = D0

    def _taker_split(self, order: Order | None) -> Decimal | None:
        """The largest trade size while a ``partial_fill`` fault is armed (None = unlimited)."""
        if order is None or self.faults is None:
            return None
        args = self.faults.take("partial_fill")
        if args is None:
            return None
        parts = max(int(args.get("parts", 2)), 1)
        return max(round_down(order.amount / parts, order.spec.lot_d), order.spec.lot_d)

    def _match(self, book: Book, taker: Order, max_trade: Decimal | None) -> list[Fill]:
        """Trade ``taker`` against the opposite side while it crosses; returns the taker's fills."""
        side = book.opposite(taker.side)
        is_buy = taker.side == "buy"
        fills: list[Fill] = []
        while taker.status == "open" and side.crosses(taker.price, is_buy):
            px = side.best()
            assert px is not None
            maker = side.levels[px][0]
            qty = min(taker.remaining, maker.remaining)
            if taker.quote_amount is not None:  # a market buy by quote spend
                spend_left = taker.quote_amount - taker.cost
                qty = min(qty, round_down(spend_left / px, taker.spec.lot_d))
            if max_trade is not None:
                qty = min(qty, max_trade)
            if qty <= 0:
                break
            ts = now_ms()
            fills.append(self._fill(taker, px, qty, False, ts))
            self._fill(maker, px, qty, True, ts)
            if maker.remaining <= 0:
                side.remove(maker)
                if maker.account == MARKET:
                    book.market_levels.pop((maker.side, px), None)
        if taker.quote_amount is not None and taker.status == "open":
            taker.amount = taker.filled  # what the quote bought is the order's size
            if taker.filled:
                taker.status = "closed"
            self._close_if_done(taker)
        return fills

    def _fill(self, order: Order, px: Decimal, qty: Decimal, maker: bool, ts: int) -> Fill:
        spec = order.spec
        acct = self.accounts[order.account]
        rate = self.maker_fee if maker else self.taker_fee
        if order.side == "buy":
            fee, fee_ccy = (
                (qty * px * rate, spec.quote) if self.fee_in_quote else (qty * rate, spec.base)
            )
            fee = fee.quantize(self.fee_step, ROUND_HALF_UP)
            paid = qty * px + (fee if self.fee_in_quote else D0)
            if order.type == "limit" and order.price is not None and order.quote_amount is None:
                held = self._buy_hold(qty * order.price)
            else:
                held = min(paid, order.locked)
            acct.spend_locked(spec.quote, min(paid, held))
            if held > paid:  # a limit buy filled below its limit: the difference is free again
                acct.unlock(spec.quote, held - paid)
            order.locked -= held
            acct.receive(spec.base, qty if self.fee_in_quote else qty - fee)
        else:
            fee, fee_ccy = (qty * px * rate).quantize(self.fee_step, ROUND_HALF_UP), spec.quote
            acct.spend_locked(spec.base, qty)
            order.locked -= qty
            acct.receive(spec.quote, qty * px - fee)
        order.filled += qty
        order.cost += qty * px
        order.fee += fee
        order.fee_currency = fee_ccy
        order.updated_ms = ts
        fill = Fill(
            next(self._trade_ids) if order.account != MARKET else 0,
            order,
            px,
            qty,
            fee,
            fee_ccy,
            maker,
            ts,
        )
        if order.account != MARKET:
            order.fills.append(fill)
            self.trades.append(fill)
        if order.remaining <= 0 and order.quote_amount is None:
            order.status = "closed"
            self._close_if_done(order)
        self._emit("trade", order, fill)
        return fill

    def _close_if_done(self, order: Order) -> None:
        if order.status != "open" and order.locked:
            self._release(self.accounts[order.account], order)

    # -- cancel and amend
    def cancel(self, account: str, order_id: Any = None, client_id: str | None = None) -> Order:
        order = self.find(account, order_id, client_id)
        if not order.is_open:
            raise Reject("unknown_order", "Unknown order sent.")
        self.books[order.symbol].side(order.side).remove(order)
        self._release(self.accounts[account], order)
        order.status = "canceled"
        order.updated_ms = now_ms()
        self._emit("canceled", order)
        return order

    def cancel_all(self, account: str, symbol: str | None = None) -> list[Order]:
        return [self.cancel(account, o.order_id) for o in self.open_orders(account, symbol)]

    def amend(
        self,
        account: str,
        order_id: Any,
        price: Any = None,
        amount: Any = None,
        client_id: str | None = None,
    ) -> list[Fill]:
        """Change a resting order in place: a size cut keeps its queue place, anything else
        re-queues it (and may trade). Returns the fills that the re-queue caused."""
        order = self.find(account, order_id, client_id)
        if not order.is_open:
            raise Reject("unknown_order", "Unknown order sent.")
        book = self.books[order.symbol]
        acct = self.accounts[account]
        new_px = order.price if price is None else dec(price)
        new_amt = order.amount if amount is None else dec(amount)
        if new_amt <= order.filled:
            raise Reject("filter_lot", "new quantity is not above the filled quantity")
        trial = Order(
            order.order_id,
            order.client_id,
            account,
            order.spec,
            order.side,
            order.type,
            new_amt,
            new_px,
        )
        self.validate(trial)
        if new_px == order.price and new_amt <= order.amount:
            cut = order.amount - new_amt
            freed = self._buy_hold(cut * new_px) if order.side == "buy" else cut  # type: ignore[operator]
            order.amount = new_amt
            acct.unlock(self._lock_asset(order)[0], freed)
            order.locked -= freed
            order.updated_ms = now_ms()
            self._emit("amended", order)
            return []
        book.side(order.side).remove(order)
        self._release(acct, order)
        order.price, order.amount = new_px, new_amt
        try:
            rem = order.remaining
            need = self._buy_hold(rem * new_px) if order.side == "buy" else rem  # type: ignore[operator]
            acct.lock(self._lock_asset(order)[0], need)
            order.locked = need
        except Reject:
            order.status = "canceled"
            self._emit("canceled", order)
            raise
        order.updated_ms = now_ms()
        self._emit("amended", order)
        fills = self._match(book, order, None)
        if order.is_open and order.remaining > 0:
            book.side(order.side).add(order)
        return fills
