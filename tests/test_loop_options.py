"""procs.loop's options for the processes that are not a plain reader: ``ExitLoop`` (the feed
stops the run with EXIT_STOP_RUN), ``on_other`` (the recorder's audit records on control),
``drained`` (a drain of several rings or with a deadline: recorder, bridge) and ``wake`` (rings
read raw by the process itself: the bridge). On the fakes of tests/test_loop.py."""

from __future__ import annotations

from typing import Any

from engine.messages import ControlCommand
from procs.loop import ExitLoop, Loop, Timer
from procs.runtime import STATE_STOPPED, STATE_STOPPING
from tests.test_loop import FakeConsumer, FakeWaiter, FakeWorker, ctl


def test_exit_loop_returns_its_code_skips_on_stop_and_still_closes() -> None:
    w = FakeWorker({"control": FakeConsumer()})
    seen: list[str] = []
    passes = [0]

    def tick(now: int) -> None:
        passes[0] += 1
        if passes[0] == 2:
            raise ExitLoop(3)

    loop = Loop(w, [], [Timer(0, tick)], on_stop=lambda: seen.append("stop"))  # type: ignore[arg-type]
    assert loop.run(on_exit=lambda: seen.append("exit")) == 3
    assert passes[0] == 2 and seen == ["exit"]
    assert w.states == [STATE_STOPPING, STATE_STOPPED] and w.closed and w.waiters[0].closed


def test_what_control_carries_besides_control_goes_to_on_other() -> None:
    record = object()  # e.g. the supervisor's AuditEvent
    control = FakeConsumer([[record, ctl(ControlCommand.KILL)], [ctl(ControlCommand.STOP)]])
    w = FakeWorker({"control": control})
    others: list[Any] = []
    commands: list[int] = []
    loop = Loop(
        w,  # type: ignore[arg-type]
        [],
        on_other=others.append,
        on_control=lambda c: commands.append(c.command),
    )
    assert loop.run() == 0
    assert others == [record] and commands == [int(ControlCommand.KILL)]


def test_a_drained_test_keeps_the_loop_going_after_stop_until_it_holds() -> None:
    control = FakeConsumer([[ctl(ControlCommand.STOP)]])
    w = FakeWorker({"control": control})
    order: list[str] = []
    passes = [0]

    def tick(now: int) -> bool:
        passes[0] += 1
        order.append(f"pass{passes[0]}")
        return passes[0] == 2  # the second pass does work: the loop cannot leave after it

    loop = Loop(
        w,  # type: ignore[arg-type]
        [],
        [Timer(0, tick)],
        drained=lambda: passes[0] >= 2,
        on_stop=lambda: order.append("stop"),
    )
    assert loop.run() == 0
    assert order == ["pass1", "pass2", "pass3", "stop"]


def test_woken_rings_are_waited_on_with_the_inputs_and_control() -> None:
    class RecordingWorker(FakeWorker):
        def waiter(self, *consumers: Any) -> FakeWaiter:
            self.waited_on = consumers
            return super().waiter(*consumers)

    control, raw = FakeConsumer([[ctl(ControlCommand.STOP)]]), FakeConsumer()
    w = RecordingWorker({"control": control, "raw": raw})
    Loop(w, [], wake=["raw"]).run()  # type: ignore[arg-type]
    assert set(map(id, w.waited_on)) == {id(control), id(raw)}
