"""Strategy.on_remote: another engine's messages reach hosted strategies through the host, once
each and in order (re-deliveries dropped by the envelope filter), with intents going out as usual."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.instruments import Instrument
from engine.messages import (
    IntentNew,
    Message,
    OrderFilled,
    OrderPartiallyFilled,
    Remote,
    Side,
    tag_of,
)
from engine.strategies.base import Strategy, StrategyContext
from engine.strategy_host import StrategyHost, StrategySpec
from procs.bridge import REMOTE_DECODER, REMOTE_TAG, RemoteFilter

INS = [Instrument(instrument_id=1, symbol="AAA"), Instrument(instrument_id=2, symbol="BBB")]


def remote_fill(k: int, side: int = Side.BUY, source: str = "east") -> Remote:
    cls = OrderFilled if k % 2 else OrderPartiallyFilled
    f = cls((5 << 32) | k, 70 + k, 1, side, 19_000 + k, 10, 10 * k, 0, 0.5, 1, k, 0, 0, 0)
    return Remote(source, "events", f"1700000000000-{k}", 1_000 + k, f)


class Hedger(Strategy):
    """Sells what the remote engine bought (a cross-host hedge), and keeps what it saw."""

    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.seen: list[tuple[str, Any]] = []

    def on_remote(self, source_engine: str, msg: Any, ctx: StrategyContext) -> None:
        assert ctx is self.ctx
        self.seen.append((source_engine, msg))
        if isinstance(msg, OrderPartiallyFilled) and msg.side == Side.BUY:
            ctx.sell(msg.instrument_id, msg.fill_qty, msg.fill_px)


class Exploder(Strategy):
    def on_remote(self, source_engine: str, msg: Any, ctx: StrategyContext) -> None:
        raise RuntimeError("boom")


def test_remote_fills_reach_every_strategy_once_in_order_and_may_trade() -> None:
    host = StrategyHost(
        [StrategySpec(Hedger, strategy_id=1), StrategySpec(Strategy, strategy_id=2)], INS
    )
    hedger = host.strategy(1)
    sent = [remote_fill(k) for k in (1, 2, 3)]
    delivered = [sent[0], sent[1], sent[1], sent[0], sent[2]]  # at-least-once: repeats
    flt = RemoteFilter()
    intents: list[Any] = []
    for r in delivered:
        if flt.fresh(r):
            intents += host.on_remote(r, 5_000)
    assert flt.dropped == 2 and host.remote_in == 3
    assert hedger.seen == [("east", r.msg) for r in sent]
    assert all(isinstance(i, IntentNew) and i.side == Side.SELL for i in intents)
    assert [(i.qty, i.px) for i in intents] == [(10, 19_001), (10, 19_002), (10, 19_003)]
    assert [i.ts_origin for i in intents] == [r.ts_recv for r in sent]  # caused by the delivery
    assert not host.context(1).positions.get(1)  # information, not our own fills


def test_a_failing_on_remote_disables_only_that_strategy_and_a_stopped_host_ignores() -> None:
    host = StrategyHost([StrategySpec(Exploder, strategy_id=1), Hedger], INS)
    host.on_remote(remote_fill(1), 1)
    assert [e[:2] for e in host.errors] == [("Exploder#1", "on_remote")]
    assert len(host.strategy(2).seen) == 1
    host.on_remote(remote_fill(2), 2)
    assert len(host.strategy(2).seen) == 2 and len(host.errors) == 1
    host.stop(3)
    assert host.on_remote(remote_fill(3), 4) == [] and len(host.strategy(2).seen) == 2


def test_the_envelope_is_an_engine_message_framed_as_tag_48() -> None:
    r = remote_fill(3, Side.SELL)
    assert REMOTE_TAG == tag_of(Remote) == 48
    raw = msgspec.msgpack.encode(r)
    # the strategy process decodes the ring with the engine's union, the supervisor with its own
    assert msgspec.msgpack.Decoder(Message).decode(raw) == r
    assert REMOTE_DECODER.decode(raw) == r
    with pytest.raises(
        msgspec.ValidationError
    ):  # a garbled inner message is refused, not passed on
        REMOTE_DECODER.decode(msgspec.msgpack.encode([48, "east", "events", "1-1", 0, [33, "x"]]))
