"""NautilusTrader's side of perf/bench_backtest.py: the same EMA crossover on the same quotes.

Run by the interpreter named in ``NAUTILUS_PYTHON`` (a Python >= 3.12 with ``nautilus_trader``
installed; never a dependency of Gekko), in a subprocess of the bench::

    $NAUTILUS_PYTHON perf/_nautilus_ema.py QUOTES.npy FAST SLOW THRESHOLD SLIPPAGE SIZE

``QUOTES.npy`` holds the bench's quotes as int64 columns (ts_event ns, bid_px, bid_qty, ask_px,
ask_qty; prices in 0.01 ticks, sizes in whole shares). It prints one JSON line: the events, the
wall seconds of ``BacktestEngine.run`` alone (loading and sorting the data are before it), and
the orders and fills, which the bench compares with Gekko's as a check that both made the same
decisions.

The strategy is ``engine.strategies.momentum.MomentumTaker``'s logic, line for line: EMAs of
the mid in ticks (alpha 2 / (span + 1)), seeded with the first mid, ``warmup = slow`` updates,
the target ``+size`` / ``-size`` when fast - slow is beyond ``threshold`` ticks (unchanged
between), and on a change of target one IOC limit order for the difference, priced
``slippage`` ticks through the opposite best. The venue: one simulated exchange, netting,
margin account (shorts allowed), quotes as its L1 book, default fill and fee models; the risk
engine on, logging at ERROR. This file imports nothing of Gekko (another interpreter runs it).
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal

import numpy as np
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.config import LoggingConfig
from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
from nautilus_trader.model.instruments import Equity
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

TICK = 0.01


class EmaCrossConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
    fast: int
    slow: int
    threshold_ticks: float
    slippage_ticks: int
    size: int


class EmaCross(Strategy):
    """MomentumTaker's decisions on Nautilus's quote ticks (see the module docstring)."""

    def __init__(self, config: EmaCrossConfig) -> None:
        super().__init__(config)
        self.iid = config.instrument_id
        self.a_fast = 2.0 / (config.fast + 1)
        self.a_slow = 2.0 / (config.slow + 1)
        self.warmup = config.slow
        self.threshold = config.threshold_ticks
        self.slip = config.slippage_ticks
        self.size = config.size
        self.ema_fast = self.ema_slow = 0.0
        self.n = 0
        self.target = 0
        self.orders_sent = 0

    def on_start(self) -> None:
        self.subscribe_quote_ticks(self.iid)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        bid = round(tick.bid_price.as_double() / TICK)
        ask = round(tick.ask_price.as_double() / TICK)
        mid = (bid + ask) / 2.0
        if self.n == 0:
            self.ema_fast = self.ema_slow = mid
        else:
            self.ema_fast += self.a_fast * (mid - self.ema_fast)
            self.ema_slow += self.a_slow * (mid - self.ema_slow)
        self.n += 1
        if self.n <= self.warmup:
            return
        diff = self.ema_fast - self.ema_slow
        if diff > self.threshold:
            want = self.size
        elif diff < -self.threshold:
            want = -self.size
        else:
            return
        if want == self.target:
            return
        delta = want - self.target
        self.target = want
        if delta > 0:
            side, px = OrderSide.BUY, ask + self.slip
        else:
            side, px = OrderSide.SELL, max(1, bid - self.slip)
        order = self.order_factory.limit(
            self.iid,
            side,
            Quantity.from_int(abs(delta)),
            Price(px * TICK, 2),
            time_in_force=TimeInForce.IOC,
        )
        self.submit_order(order)
        self.orders_sent += 1


def main() -> None:
    path, fast, slow, threshold, slippage, size = sys.argv[1:7]
    q = np.load(path)
    venue = Venue("SIM")
    iid = InstrumentId(Symbol("AAA"), venue)
    instrument = Equity(
        instrument_id=iid,
        raw_symbol=Symbol("AAA"),
        currency=USD,
        price_precision=2,
        price_increment=Price.from_str("0.01"),
        lot_size=Quantity.from_int(1),
        ts_event=0,
        ts_init=0,
    )
    engine = BacktestEngine(
        BacktestEngineConfig(
            trader_id=TraderId("BENCH-001"),
            logging=LoggingConfig(log_level="ERROR"),
            run_analysis=False,
        )
    )
    engine.add_venue(
        venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        starting_balances=[Money(10_000_000, USD)],
        default_leverage=Decimal(1),
    )
    engine.add_instrument(instrument)
    ts = q[:, 0].astype(np.uint64)
    ticks = QuoteTick.from_raw_arrays_to_list(
        iid, 2, 0,
        q[:, 1] * TICK, q[:, 3] * TICK,
        q[:, 2].astype(np.float64), q[:, 4].astype(np.float64),
        ts, ts,
    )  # fmt: skip
    engine.add_data(ticks)  # sorted by ts_init here, before the timed run
    strategy = EmaCross(
        EmaCrossConfig(
            instrument_id=iid,
            fast=int(fast),
            slow=int(slow),
            threshold_ticks=float(threshold),
            slippage_ticks=int(slippage),
            size=int(size),
        )
    )
    engine.add_strategy(strategy)
    t0 = time.perf_counter()
    engine.run()
    wall = time.perf_counter() - t0
    fills = sum(len(o.events) and o.filled_qty.as_double() > 0 for o in engine.cache.orders())
    pos = engine.cache.positions_open()
    net = sum(p.signed_qty for p in pos)
    print(
        json.dumps(
            {
                "events": len(ticks),
                "wall_s": wall,
                "orders": strategy.orders_sent,
                "filled_orders": int(fills),
                "position": float(net),
                "target": strategy.target,
            }
        )
    )
    engine.dispose()


if __name__ == "__main__":
    main()
