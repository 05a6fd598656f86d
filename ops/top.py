"""``gekko top``: a live console of a running engine, read from its shared memory.

What it reads: ``EngineView`` (ops/engine_view.py) maps the engine's regions read-only and gives
one snapshot a refresh; the recent orders, fills, rejects and P&L per strategy come from the
supervisor's control socket (the read-only ``activity`` request, ops/activity.py), which only
hands over what the supervisor's own loop built. The console adds no work to any trading
process and writes nothing to shared memory.

Keys: ``k`` engages the kill switch, ``r`` releases it, each after a y/n question, through
``ops.operator.operate`` — exactly the path of ``gekko kill`` / ``gekko resume`` (the control
socket, the audit row naming this OS user, the verified-signal fallback); ``q`` (or Ctrl-C)
quits. stdin is read in cbreak mode (one key at a time, no echo) and restored on every exit.
``--once`` prints one frame, measured over ``--interval``, and exits. The screen itself:
ops/top_view.py. For operators: docs/operations.md, "gekko top".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ops.cli_common import load_config_or_exit
from ops.top_view import Frame, render

ACTIVITY_TIMEOUT_S = 1.0  # the supervisor answers from memory: a slow answer means trouble

#: a key's command: (ops.operator kind, the question, the command line the audit row names)
COMMANDS = {
    "k": ("kill", "Engage the kill switch of engine {eid}? (y/n)", "gekko kill (gekko top)"),
    "r": ("resume", "Release the kill switch of engine {eid}? (y/n)", "gekko resume (gekko top)"),
}


@dataclass
class KeyState:
    """The console's keys as a small state machine: a command key asks, ``y`` confirms, any
    other key cancels. ``press`` returns (action, kind): ``ask``, ``do``, ``cancel``, ``quit``
    or ``""`` (nothing to do)."""

    pending: str = ""  # the key whose question waits for y/n

    def press(self, ch: str) -> tuple[str, str]:
        if self.pending:
            key, self.pending = self.pending, ""
            if ch in ("y", "Y"):
                return "do", key
            return "cancel", key
        if ch in ("q", "Q"):
            return "quit", ""
        if ch in COMMANDS:
            self.pending = ch
            return "ask", ch
        return "", ""


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[bool]:
    """stdin one key at a time, no echo (Ctrl-C still interrupts); restored on exit. Yields
    whether keys can be read at all (False when stdin is not a terminal)."""
    if not os.isatty(fd):
        yield False
        return
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def read_keys(fd: int, timeout_s: float) -> str:
    """The keys typed within ``timeout_s`` ('' when none)."""
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
    if not ready:
        return ""
    return os.read(fd, 64).decode(errors="ignore")


# --- reading the engine ----------------------------------------------------------------------
def fetch_activity(cfg: Any) -> tuple[dict[str, Any] | None, str]:
    """(the supervisor's ``activity`` answer, or None and why)."""
    from ops.control import ControlUnreachable, request, socket_path

    try:
        ans = request(
            socket_path(cfg.engine.var_dir, cfg.engine.id, cfg.security.control_socket_dir),
            {"op": "activity"},
            timeout_s=ACTIVITY_TIMEOUT_S,
        )
    except ControlUnreachable as exc:
        return None, f"no answer from the supervisor: {exc}"
    if not ans.get("ok") or "error" in ans:  # refused, or it could not build the figures
        return None, f"the supervisor says: {ans.get('error')}"
    return ans, ""


def operate_key(cfg: Any, kind: str, command: str) -> str:
    """Deliver ``kind`` exactly as ``gekko kill`` / ``gekko resume`` do; the line to show."""
    from ops.operator import CommandRefused, EngineNotRunning, operate
    from ops.store.audit import os_user

    try:
        return operate(
            cfg.engine.var_dir,
            cfg.engine.id,
            kind,
            command,
            os_user(),
            socket_dir=cfg.security.control_socket_dir,
        )
    except (EngineNotRunning, CommandRefused) as exc:
        return f"FAILED: {exc}"


class Console:
    """One attached engine: snapshots, the previous one for rates, the supervisor's activity."""

    def __init__(self, cfg: Any, view: Any) -> None:
        self.cfg = cfg
        self.view = view
        self.prev: dict[str, Any] | None = None
        self.snap: dict[str, Any] = {}
        self.activity: dict[str, Any] | None = None
        self.note = ""
        self.prompt = ""

    def refresh(self) -> None:
        snap = self.view.snapshot()
        if self.snap:
            self.prev = self.snap
        self.snap = snap
        self.activity, self.note = fetch_activity(self.cfg)

    def frame(self, width: int) -> Frame:
        return Frame(
            self.snap,
            self.prev,
            self.activity,
            self.note,
            self.prompt,
            stale_after_s=self.cfg.supervisor.heartbeat_timeout_s,
            width=width,
        )


def attach(cfg: Any) -> Any:
    from ops.engine_view import EngineView
    from ops.operator import EngineNotRunning

    try:
        return EngineView.attach(cfg.engine.id, cfg)
    except EngineNotRunning as exc:
        print(f"gekko: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def once(cfg: Any, interval_s: float) -> int:
    """One frame, its rates and CPU measured over ``interval_s``, to stdout."""
    from rich.console import Console as RichConsole

    view = attach(cfg)
    try:
        c = Console(cfg, view)
        c.refresh()
        time.sleep(interval_s)
        c.refresh()
        width = shutil.get_terminal_size((120, 50)).columns
        RichConsole(width=width).print(render(c.frame(width)))
    finally:
        view.close()
    return 0


def _on_key(c: Console, keys: KeyState, ch: str, redraw: Callable[[], None]) -> bool:
    """Handle one key; False when the console should quit."""
    action, key = keys.press(ch)
    if action == "quit":
        return False
    eid = c.cfg.engine.id
    if action == "ask":
        c.prompt = COMMANDS[key][1].format(eid=repr(eid))
    elif action == "cancel":
        c.prompt = f"{COMMANDS[key][0]}: cancelled"
    elif action == "do":
        kind, _, command = COMMANDS[key]
        c.prompt = f"{command}: sending to engine {eid!r}..."
        redraw()
        c.prompt = operate_key(c.cfg, kind, command)
    return True


def live(cfg: Any, interval_s: float) -> int:
    """The live console until ``q``, Ctrl-C, or the engine stops."""
    from rich.console import Console as RichConsole
    from rich.live import Live

    view = attach(cfg)
    term = RichConsole()
    c = Console(cfg, view)
    keys = KeyState()
    fd = sys.stdin.fileno()
    stopped = False
    # SIGTERM / SIGHUP leave like Ctrl-C: the terminal is restored on the way out
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        with cbreak(fd) as can_read, Live(console=term, screen=True, auto_refresh=False) as screen:

            def redraw() -> None:
                # the terminal's own size, each frame: a resize is followed, and a COLUMNS or
                # LINES left in the environment (which rich would prefer) is not
                with contextlib.suppress(OSError):
                    term.size = os.get_terminal_size(sys.stdout.fileno())
                screen.update(render(c.frame(term.width)), refresh=True)

            while True:
                c.refresh()
                if not c.snap.get("alive", True):
                    stopped = True
                    break
                redraw()
                deadline = time.monotonic() + interval_s
                while (left := deadline - time.monotonic()) > 0:
                    if not can_read:
                        time.sleep(left)
                        continue
                    typed = read_keys(fd, left)
                    if not typed:
                        continue
                    for ch in typed:
                        if not _on_key(c, keys, ch, redraw):
                            return 0
                    break  # a key was handled: draw its effect now
    except KeyboardInterrupt:
        return 0
    finally:
        view.close()
    if stopped:
        print(f"gekko top: engine {cfg.engine.id!r} stopped", file=sys.stderr)
        return 1
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.config)
    if args.once:
        return once(cfg, args.interval)
    if not sys.stdout.isatty():
        print("gekko top: stdout is not a terminal: use --once for one frame", file=sys.stderr)
        return 2
    return live(cfg, args.interval)


def _interval(text: str) -> float:
    """argparse type: the refresh period, 0.1 .. 60 seconds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.1 <= v <= 60:
        raise argparse.ArgumentTypeError(f"must be within 0.1 .. 60 seconds, not {text}")
    return v


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    p = with_config(
        sub.add_parser("top", help="live console of a running engine (keys: k kill, r resume)")
    )
    p.add_argument(
        "--interval", type=_interval, default=1.0, help="seconds between refreshes (default 1)"
    )
    p.add_argument(
        "--once", action="store_true", help="print one frame (rates over --interval) and exit"
    )
    p.set_defaults(func=cmd_top)
