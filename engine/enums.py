"""The named values of the engine's integer message fields (sides, order types, states, reasons).

On the wire they are plain ``int`` fields (decoding an IntEnum costs a lookup on the hot path);
these classes name the values for humans and compare equal to the ints. ``engine.messages``
re-exports every one, so code names them with the messages that carry them.
"""

from __future__ import annotations

from enum import IntEnum


class Side(IntEnum):
    """Order or aggressor side. The sign doubles as the sign of a position change."""

    BUY = 1
    SELL = -1
    NONE = 0


class OrderType(IntEnum):
    MARKET = 1
    LIMIT = 2
    STOP = 3
    STOP_LIMIT = 4
    TRAILING_STOP = 5
    MARKET_IF_TOUCHED = 6  # a MARKET when the price touches ``stop_px`` (buy: at or below)
    LIMIT_IF_TOUCHED = 7  # a LIMIT at ``px`` when the price touches ``stop_px``
    TRAILING_STOP_LIMIT = 8  # a trailing stop that sends a LIMIT offset from the stop
    MARKET_TO_LIMIT = 9  # takes the touch; what is left rests as a LIMIT at the first fill's price


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTD = 4
    DAY = 5
    AT_THE_OPEN = 6  # works in the venue's opening auction / at the session open only
    AT_THE_CLOSE = 7  # works at the session close only


class OrderFlag(IntEnum):
    """Bit flags on an order."""

    NONE = 0
    POST_ONLY = 1
    REDUCE_ONLY = 2


class Liquidity(IntEnum):
    MAKER = 1
    TAKER = 2


class ControlCommand(IntEnum):
    """Commands sent to processes on the control ring."""

    STOP = 1  # stop trading and shut down cleanly
    KILL = 2  # kill switch: halt, cancel every open order
    RESUME = 3  # explicit resume after a halt
    CANCEL_ALL = 4
    FLATTEN = 5  # kill switch variant that also closes positions


class RiskEventKind(IntEnum):
    ORDER_REJECTED = 1
    LIMIT_BREACH = 2
    KILL_SWITCH = 3
    STATE_CHANGE = 4
    RESUMED = 5
    MARGIN_CALL = 6  # an account's equity fell below its maintenance margin
    LIQUIDATION = 7  # the venue (or the simulated one) closed a position for want of margin


class TradingState(IntEnum):
    ACTIVE = 1
    REDUCING = 2
    HALTED = 3


class AlgoKind(IntEnum):
    """Execution algorithm of a parent order (``algo`` on IntentNew / NewOrder; 0 = a plain
    order sent to the venue as it is). See ``engine.algos``."""

    NONE = 0
    TWAP = 1
    VWAP = 2
    ICEBERG = 3
    POV = 4


class AlgoState(IntEnum):
    """Life cycle of a parent order run by an execution algorithm (``AlgoProgress.state``)."""

    WORKING = 1
    DONE = 2  # fully filled
    CANCELED = 3  # canceled by request (children canceled) or ended with quantity left
    REJECTED = 4


class CancelRejectReason(IntEnum):
    """Why a cancel was refused (``OrderCancelRejected.reason``); the order is unchanged."""

    UNKNOWN_ORDER = 1  # the venue (or router, or algo engine) does not know the order
    NOT_OPEN = 2  # already filled / canceled / expired: the cancel crossed the order's end
    REFUSED = 3  # any other reason, said in ``detail`` (a real venue's own refusal)


class ReplaceRejectReason(IntEnum):
    """Why a replace (amend) was refused (``OrderReplaceRejected.reason``); the order is
    unchanged. The first values match ``CancelRejectReason``'s."""

    UNKNOWN_ORDER = 1
    NOT_OPEN = 2  # already filled / canceled / expired (an algo parent no longer working)
    PENDING_RETRY = 3  # exec holds it for a retry: the venue does not have it right now
    INVALID = 4  # the new price or quantity is out of range
    HALTED = 5  # trading in the instrument is halted at the venue
    SELF_TRADE = 6  # the new price would trade with one of our own resting orders
    POST_ONLY = 7  # a post-only order's new price would take liquidity
    SPLIT = 8  # the order works at several venues: cancel it and send a new one
    UNSUPPORTED = 9  # this engine cannot amend such an order (an algo parent without amends)
    REFUSED = 10  # any other reason, said in ``detail`` (an algorithm's check, a venue's text)


class ExchangeStatusKind(IntEnum):
    """What a venue says about trading in an instrument (``ExchangeStatus.status``)."""

    OPEN = 1
    HALTED = 2  # a regulatory or venue halt
    CIRCUIT_BREAKER = 3  # the exchange's own limit-up/limit-down or market-wide breaker


class ReconciliationKind(IntEnum):
    """What recovery found different between the stored record and the venue (tags 60-64)."""

    MISSING_FILL = 1  # the venue filled us and the record did not know: applied
    UNKNOWN_AT_VENUE = 2  # open in the record, not open at the venue: closed (canceled)
    UNKNOWN_LOCALLY = 3  # open at the venue, unknown to the record: adopted
    MISSING_ACK = 4  # the venue accepted an order the record still had as submitted
    ORDER_MISMATCH = 5  # price or open quantity differ: the venue's are taken
    POSITION_MISMATCH = 6  # the position from recorded fills differs from the venue's
    DUPLICATE_SUPPRESSED = 7  # an order re-delivered after a crash that the venue already had


class ContingencyType(IntEnum):
    """How an order of an order list depends on its peers (``contingency`` on IntentNew /
    NewOrder; DESIGN: NautilusTrader's OTO/OCO/OUO). A bracket is an OTO entry whose two
    children are an OCO pair (take-profit + stop-loss)."""

    NONE = 0
    OTO = 1  # one-triggers-other: this order is released by fills of ``parent_id``
    OCO = 2  # one-cancels-other: a fill of this order cancels the ``linked`` orders
    OUO = 3  # one-updates-other: a fill of this order reduces the ``linked`` orders by as much


class SettlementKind(IntEnum):
    """Why a position was settled (``Settlement.kind``)."""

    EXPIRY = 1  # a dated future expired at ``px``
    RESOLVED = 2  # a binary contract or betting selection resolved (``outcome`` 1 or 0)
    VOID = 3  # the market was voided: its trades are undone, stakes returned


class InstrumentKind:
    """The kinds an ``Instrument.kind`` may name (strings in config.toml)."""

    SPOT = "spot"
    PERPETUAL = "perpetual"
    FUTURE = "future"
    FX = "fx"
    BINARY = "binary"
    BETTING = "betting"
    ALL = (SPOT, PERPETUAL, FUTURE, FX, BINARY, BETTING)
