"""procs.loop: the worker loop written once — control, input priority, counters, timers, drain,
shutdown — on fakes of the worker and its rings (the real ones: tests/test_engine_e2e.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from engine.messages import Control, ControlCommand
from procs.loop import Input, Loop, Outbox, Timer
from procs.runtime import STATE_STOPPED, STATE_STOPPING


class FakeRing:
    def __init__(self) -> None:
        self.closed = False
        self.producer_pid = 0


class FakeConsumer:
    def __init__(self, script: list[list[Any]] | None = None) -> None:
        self.script = list(script or [])  # one batch per poll
        self.ring = FakeRing()

    def poll_batch(self, n: int) -> list[Any]:
        return self.script.pop(0) if self.script else []

    def has_data(self) -> bool:
        return any(self.script)


class FakeMetrics:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.values: dict[str, int] = {}

    def counter_index(self, name: str) -> int:
        if name not in self.names:
            self.names.append(name)
        return self.names.index(name)

    def inc_i(self, i: int, n: int = 1) -> None:
        self.values[self.names[i]] = self.values.get(self.names[i], 0) + n


class FakeWaiter:
    def __init__(self) -> None:
        self.waits = 0
        self.closed = False

    def wait_any(self, timeout_s: float) -> bool:
        self.waits += 1
        return False

    def close(self) -> None:
        self.closed = True


class FakeWorker:
    def __init__(self, rings: dict[str, FakeConsumer]) -> None:
        self.cfg = SimpleNamespace(supervisor=SimpleNamespace(heartbeat_interval_s=0.001))
        self.consumers: dict[str, Any] = {}
        self.producers: dict[str, Any] = {}
        self._rings = rings
        self.metrics = FakeMetrics()
        self.processed = 0
        self.states: list[int] = []
        self.beats = 0
        self.closed = False
        self.waiters: list[FakeWaiter] = []

    def consume(self, ring: str) -> FakeConsumer:
        c = self.consumers[ring] = self._rings[ring]
        return c

    def waiter(self, *consumers: Any) -> FakeWaiter:
        self.waiters.append(FakeWaiter())
        return self.waiters[-1]

    def beat(self, state: int | None = None) -> None:
        self.beats += 1
        if state is not None:
            self.states.append(state)

    def close(self) -> None:
        self.closed = True
        self.states.append(STATE_STOPPED)


def ctl(cmd: ControlCommand) -> Control:
    return Control(int(cmd), 1, "")


def test_inputs_in_priority_order_counted_then_stop_without_drain_leaves_at_once() -> None:
    seen: list[tuple[str, Any]] = []
    control = FakeConsumer([[], [], [ctl(ControlCommand.STOP)]])
    a = FakeConsumer([[1, 2], [3]])
    b = FakeConsumer([["x"], [], [], ["never"]])
    w = FakeWorker({"control": control, "a": a, "b": b})
    ticks: list[int] = []
    loop = Loop(
        w,  # type: ignore[arg-type]
        [
            Input("a", lambda m, now: seen.append(("a", m)), counter="a_in", processed=True),
            Input("b", on_batch=lambda ms: seen.extend(("b", m) for m in ms), counter="b_in"),
        ],
        [Timer(0, ticks.append)],
        on_stop=lambda: seen.append(("stop", None)),
    )
    assert loop.run(on_exit=lambda: seen.append(("exit", None))) == 0
    # a's batch before b's on each pass; STOP ends the loop before the third pass's inputs
    assert seen == [("a", 1), ("a", 2), ("b", "x"), ("a", 3), ("stop", None), ("exit", None)]
    assert w.metrics.values == {"a_in": 3, "b_in": 1}
    assert w.processed == 3
    assert len(ticks) == 2  # a Timer(0) runs on every pass
    assert w.states == [STATE_STOPPING, STATE_STOPPED] and w.closed and w.waiters[0].closed


def test_stop_with_drain_finishes_the_upstream_and_other_commands_go_to_on_control() -> None:
    got: list[Any] = []
    controls: list[int] = []
    control = FakeConsumer([[ctl(ControlCommand.KILL), ctl(ControlCommand.STOP)]])
    up = FakeConsumer([[], ["late"], [], ["later"]])  # arrives after the STOP
    w = FakeWorker({"control": control, "up": up})
    loop = Loop(
        w,  # type: ignore[arg-type]
        [Input("up", lambda m, now: got.append(m))],
        drain="up",
        on_control=lambda c: controls.append(c.command),
    )
    up.ring.closed = False
    # the producer closes its ring once everything is read
    orig = up.poll_batch

    def poll(n: int) -> list[Any]:
        out = orig(n)
        if not up.script:
            up.ring.closed = True
        return out

    up.poll_batch = poll  # type: ignore[method-assign]
    loop.run()
    assert controls == [int(ControlCommand.KILL)]
    assert got == ["late", "later"]
    assert loop.stopping


def test_a_gated_input_is_not_polled_and_an_idle_pass_waits() -> None:
    control = FakeConsumer([[], [], [ctl(ControlCommand.STOP)]])
    held = FakeConsumer([["kept"]])
    w = FakeWorker({"control": control, "held": held})
    got: list[Any] = []
    loop = Loop(
        w,  # type: ignore[arg-type]
        [Input("held", lambda m, now: got.append(m), when=lambda: False)],
    )
    loop.run()
    assert got == [] and held.script == [["kept"]]
    assert w.waiters[0].waits == 2  # nothing to do on the two passes before the STOP


def test_outbox_counts_and_taps_what_it_publishes() -> None:
    class P:
        def __init__(self) -> None:
            self.out: list[Any] = []

        def publish(self, m: Any) -> None:
            self.out.append(m)

        def publish_batch(self, ms: list[Any]) -> None:
            self.out.extend(ms)

    w = FakeWorker({})
    w.producers["r"] = P()
    tapped: list[Any] = []
    box = Outbox(w, counters={"r": "r_out"}, taps={"r": tapped.append})  # type: ignore[arg-type]
    box.publish("r", 1)
    box.publish_batch("r", [2, 3])
    box.publish_batch("r", [])
    assert w.producers["r"].out == [1, 2, 3] and tapped == [1, 2, 3]
    assert w.metrics.values == {"r_out": 3}
