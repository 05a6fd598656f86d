"""The worker loop, written once: every process runs its handlers through it.

A process differs from another only in what it does with a message (the shape of the LMAX
Disruptor's ``BatchEventProcessor`` + ``EventHandler``). What they share lives here: the
``control`` ring (STOP, and the other commands handed to ``on_control``), the input rings read
in priority order (the order of ``inputs``), a batch per ring per pass, the metrics counter of
each input, timers, the heartbeat (``Worker.beat``), waiting when idle (``Waiter.wait_any``), and
shutdown (heartbeat STOPPING, waiter and rings closed).

How a process uses it::

    w = Worker("exec", cfg, engine_id, incarnation)
    events = w.produce("events")                  # outputs: through an Outbox (below)
    ...                                           # build the engine stage and the extras
    loop = Loop(
        w,
        [Input("orders", stage.on_order, counter="orders_in", processed=True),
         Input("md", stage.on_md, batch=512, counter="md_in")],
        [Timer(0, poll_venue)],                   # 0: every pass; else every interval_ns
        idle_s=0.01,
        drain="orders",                           # on STOP: finish what the upstream still sends
        on_stop=cancel_everything,                # after the loop, before the rings close
    )
    w.beat(STATE_READY)
    return loop.run(on_exit=close_my_files)       # returns 0; closes the worker

An input gives either ``on_message(msg, now_ns)`` (called per message, ``now_ns`` from the
monotonic clock) or ``on_batch(msgs)`` (the whole batch: a process that looks at a batch
first, e.g. the strategy's backlog guard). A process with no input ring (the feed, which
produces from its source) passes ``inputs=[]`` and does its work in a ``Timer(0, fn)``: a timer
whose ``fn`` returns something truthy counts as work done (the loop does not sleep after it).

STOP: with ``drain=None`` the loop ends at once (nothing upstream to wait for); with
``drain=<ring>`` it goes on until that ring is empty and its producer has closed it or is
dead, so the upstream's last messages (the strategies' cancels) get through. A process whose
drain is its own (several rings, a deadline) passes ``drained=fn`` instead: the loop goes on
after STOP until a pass does no work and ``fn()`` is true.

Also: ``on_other`` gets what the control ring carries besides ``Control`` (the supervisor's
audit records, for the recorder); ``wake`` names rings the process reads itself (raw, in a
timer: the bridge) whose data also ends an idle wait; a handler raises ``ExitLoop(code)`` to
end the run at once with that exit code (e.g. ``EXIT_STOP_RUN``), skipping ``on_stop``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.messages import Control, ControlCommand
from procs.runtime import STATE_STOPPING, Worker
from shm.ring import Consumer


class ExitLoop(Exception):  # noqa: N818 - an exit, not an error
    """Raised by a handler or timer: leave the loop now; ``Loop.run`` returns ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Input:
    """One input ring and what to do with its messages."""

    ring: str
    on_message: Callable[[Any, int], Any] | None = None
    on_batch: Callable[[list[Any]], Any] | None = None
    batch: int = 256  # at most this many messages per pass
    counter: str | None = None  # metrics counter: + the batch's size, after it is handled
    processed: bool = False  # counts into the health row's ``processed``
    when: Callable[[], bool] | None = None  # polled only while this says so (None: always)


@dataclass
class Timer:
    """``fn(now_ns)`` every ``interval_ns`` (0: on every pass of the loop)."""

    interval_ns: int
    fn: Callable[[int], Any]
    at_start: bool = False  # first due at once (else one interval after the loop starts)
    next_ns: int = 0


class Outbox:
    """A stage's outputs: ``publish(ring, msg)`` / ``publish_batch(ring, msgs)`` onto the
    process's producers, by ring name. ``counters`` adds the count of messages published on a
    ring to a metrics counter; ``taps`` calls ``fn(msg)`` on each one (the process's own
    bookkeeping: metrics, logs), after it is published."""

    def __init__(
        self,
        w: Worker,
        counters: dict[str, str] | None = None,
        taps: dict[str, Callable[[Any], None]] | None = None,
    ) -> None:
        self.producers = w.producers
        self.metrics = w.metrics
        self.counters = {r: w.metrics.counter_index(c) for r, c in (counters or {}).items()}
        self.taps = dict(taps or {})

    def publish(self, ring: str, msg: Any) -> None:
        self.producers[ring].publish(msg)
        c = self.counters.get(ring)
        if c is not None:
            self.metrics.inc_i(c)
        tap = self.taps.get(ring)
        if tap is not None:
            tap(msg)

    def publish_batch(self, ring: str, msgs: Sequence[Any]) -> None:
        if not msgs:
            return
        self.producers[ring].publish_batch(msgs)
        c = self.counters.get(ring)
        if c is not None:
            self.metrics.inc_i(c, len(msgs))
        tap = self.taps.get(ring)
        if tap is not None:
            for m in msgs:
                tap(m)


class Loop:
    """The main loop of one worker process (module docstring)."""

    def __init__(
        self,
        w: Worker,
        inputs: Sequence[Input],
        timers: Sequence[Timer] = (),
        *,
        idle_s: float | None = None,
        drain: str | None = None,
        on_control: Callable[[Control], Any] | None = None,
        on_stop: Callable[[], Any] | None = None,
        on_other: Callable[[Any], Any] | None = None,
        drained: Callable[[], bool] | None = None,
        wake: Sequence[str] = (),
    ) -> None:
        self.w = w
        self.inputs = list(inputs)
        self.timers = list(timers)
        self.idle_s = w.cfg.supervisor.heartbeat_interval_s if idle_s is None else idle_s
        self.on_control = on_control
        self.on_stop = on_stop
        self.on_other = on_other
        self.drained = drained
        self.control = w.consumers.get("control") or w.consume("control")
        self._consumers = [w.consumers.get(i.ring) or w.consume(i.ring) for i in self.inputs]
        self._counters = [
            w.metrics.counter_index(i.counter) if i.counter else -1 for i in self.inputs
        ]
        self.drain = self._consumers[[i.ring for i in self.inputs].index(drain)] if drain else None
        self._plan = list(zip(self.inputs, self._consumers, self._counters, strict=True))
        woken = [w.consumers.get(r) or w.consume(r) for r in wake]
        self.waiter = w.waiter(*self._consumers, *woken, self.control)
        self.stopping = False  # STOP seen: draining (``drain``) or about to leave

    def run(self, on_exit: Callable[[], Any] | None = None) -> int:
        """Loop until STOP (and the drain), then ``on_stop``; always: heartbeat STOPPING,
        ``on_exit``, the waiter and the worker closed. Returns the exit code (0, or an
        ``ExitLoop``'s)."""
        w = self.w
        code = 0
        try:
            now = time.monotonic_ns()
            for t in self.timers:
                t.next_ns = now if t.at_start else now + t.interval_ns
            while not self._pass():
                pass
            if self.on_stop is not None:
                self.on_stop()
        except ExitLoop as e:
            code = e.code
        finally:
            w.beat(STATE_STOPPING)
            try:
                if on_exit is not None:
                    on_exit()
            finally:
                self.waiter.close()
                w.close()
        return code

    def _pass(self) -> bool:
        """One pass: control, each input's batch, timers, heartbeat, wait. True: leave."""
        w = self.w
        for ctl in self.control.poll_batch(16):
            if type(ctl) is not Control:
                if self.on_other is not None:
                    self.on_other(ctl)
                continue
            if ctl.command == ControlCommand.STOP:
                self.stopping = True
            elif self.on_control is not None:
                self.on_control(ctl)
        if self.stopping and self.drain is None and self.drained is None:
            return True
        busy = False
        for inp, c, ctr in self._plan:
            if inp.when is not None and not inp.when():
                continue
            batch = c.poll_batch(inp.batch)
            if not batch:
                continue
            busy = True
            if inp.on_batch is not None:
                inp.on_batch(batch)
            else:
                h = inp.on_message
                for m in batch:
                    h(m, time.monotonic_ns())  # type: ignore[misc]
            if ctr >= 0:
                w.metrics.inc_i(ctr, len(batch))
            if inp.processed:
                w.processed += len(batch)
        if self.timers:
            now = time.monotonic_ns()
            for t in self.timers:
                if now >= t.next_ns:
                    t.next_ns = now + t.interval_ns
                    if t.fn(now):
                        busy = True
        w.beat()
        if self.stopping and not busy and (self.drained or self._drained)():
            return True
        if not busy:
            self.waiter.wait_any(self.idle_s)
        return False

    def _drained(self) -> bool:
        """The upstream ring is empty and will stay so (closed, or its producer is dead).
        Reads /proc: only called once stopping, never on the hot path."""
        from shm.region import pid_alive

        c: Consumer = self.drain  # type: ignore[assignment]
        if c.has_data():
            return False
        pid = c.ring.producer_pid
        return c.ring.closed or (pid != 0 and not pid_alive(pid))
