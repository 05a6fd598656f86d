"""Session times of an instrument: when its next open or close is, for at-the-open and
at-the-close orders exec holds until then (``engine.exec_engine``).

Why here and not in the venue: most venues we reach (crypto, the simulated exchange) trade
around the clock and have no auction to send such an order to, so exec keeps it and sends it at
the instrument's own ``session_open`` / ``session_close`` (``Instrument.session_tz``, "HH:MM"
local time) as an IOC order: it takes what the market offers at that moment, and what is left
is canceled, as an unfilled market-on-open / -on-close would be. Sessions run Monday to Friday;
an instrument without a session refuses such orders (``session_refusal``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine.instruments import Instrument
from engine.messages import TimeInForce

SESSION_TIFS = frozenset({int(TimeInForce.AT_THE_OPEN), int(TimeInForce.AT_THE_CLOSE)})


def session_time(ins: Instrument, tif: int) -> str:
    """The instrument's "HH:MM" for an at-the-open / at-the-close order ("" if none)."""
    return ins.session_open if tif == TimeInForce.AT_THE_OPEN else ins.session_close


def session_refusal(ins: Instrument | None, tif: int) -> str:
    """Why an at-the-open / at-the-close order cannot be taken for ``ins`` ("" = it can)."""
    name = "at-the-open" if tif == TimeInForce.AT_THE_OPEN else "at-the-close"
    if ins is None:
        return f"{name}: unknown instrument"
    key = "session_open" if tif == TimeInForce.AT_THE_OPEN else "session_close"
    if not ins.session_tz or not session_time(ins, tif):
        return f"{name} needs a session: instrument {ins.symbol} has no session_tz/{key}"
    return ""


def next_session_ns(wall_ns: int, tz: str, hhmm: str) -> int:
    """The first weekday ``hhmm`` (local time in ``tz``) at or after ``wall_ns`` (epoch ns)."""
    zone = ZoneInfo(tz)
    hh, mm = (int(x) for x in hhmm.split(":"))
    now = datetime.fromtimestamp(wall_ns / 1e9, zone)
    day = now.date()
    for k in range(8):
        d = day + timedelta(days=k)
        if d.weekday() >= 5:
            continue
        at = datetime(d.year, d.month, d.day, hh, mm, tzinfo=zone)
        ns = int(at.timestamp()) * 1_000_000_000
        if ns >= wall_ns:
            return ns
    raise ValueError(f"no session time {hhmm} in {tz} within a week")  # unreachable
