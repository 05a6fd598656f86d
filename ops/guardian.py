"""The guardian: stops the embedded PostgreSQL and Redis of a supervisor that died (SIGKILL).

A SIGKILLed supervisor runs no clean-up, and both servers are daemons that are not its children
(``pg_ctl`` and redis-server daemonize), so nothing the kernel offers (PR_SET_PDEATHSIG, a
process group) reaches them. So ``gekko run`` starts this small process first, in its own
session (a Ctrl-C or a group kill meant for the engine does not reach it), holding the read end
of a pipe whose only write end the supervisor keeps. The kernel closes that end when the
supervisor dies, however it dies: end of file. Then the guardian stops what the supervisor owned
— only what the owner records (``<data_dir>.owner``, ``<dbfile>.owner``) still attribute to that
very process (pid and start time), never a server another engine has adopted — and exits. A
supervisor that stops cleanly writes ``done`` first: the guardian exits without acting.

``python -m ops.guardian --owner-pid PID --owner-start T [--pg DATA_DIR] [--redis DBFILE]
[--log-format text|json] [--engine-id ID]``
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ops.identity import ProcessIdentity
from ops.logs import setup_logging

log = logging.getLogger("gekko.guardian")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gekko-guardian")
    ap.add_argument("--owner-pid", type=int, required=True)
    ap.add_argument("--owner-start", type=float, required=True)
    ap.add_argument("--pg", default="")
    ap.add_argument("--redis", default="")
    ap.add_argument("--log-format", default="text", choices=("text", "json"))
    ap.add_argument("--engine-id", default="")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging("guardian", fmt=args.log_format, engine_id=args.engine_id)
    line = sys.stdin.buffer.readline()  # blocks until ``done`` or the supervisor is gone (EOF)
    if line.strip() == b"done":
        return 0
    owner = ProcessIdentity(args.owner_pid, args.owner_start)
    deadline = time.monotonic() + 30.0  # EOF with the owner alive: it is exiting; wait for it
    while owner.alive():
        if time.monotonic() > deadline:
            log.error("pipe closed but pid %d still runs: leaving its servers alone", owner.pid)
            return 1
        time.sleep(0.05)
    if args.redis:  # first: it waits (bounded) for the dead engine's bridge to disconnect
        from ops.store.redis_store import stop_if_owned_by as stop_redis

        with contextlib.suppress(Exception):
            stop_redis(Path(args.redis), owner)
    if args.pg:
        from ops.store.pg import stop_if_owned_by as stop_pg

        try:
            stop_pg(args.pg, owner)
        except Exception as exc:
            log.error("could not stop the embedded PostgreSQL under %s: %s", args.pg, exc)
            return 1
    return 0


class Guardian:
    """The supervisor's side: start it, tell it ``done`` at a clean end."""

    def __init__(
        self,
        pg_data_dir: str = "",
        redis_dbfile: str = "",
        log_format: str = "text",
        engine_id: str = "",
    ) -> None:
        me = ProcessIdentity.current()
        cmd = [sys.executable, "-m", "ops.guardian", "--owner-pid", str(me.pid)]
        cmd += ["--owner-start", repr(me.create_time)]
        cmd += ["--log-format", log_format, "--engine-id", engine_id]
        if pg_data_dir:
            cmd += ["--pg", pg_data_dir]
        if redis_dbfile:
            cmd += ["--redis", redis_dbfile]
        # stdin: a pipe only this process writes (Popen's end is close-on-exec: no worker or
        # server started later inherits it, or the EOF would never come)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, start_new_session=True)
        self._pipe: IO[bytes] | None = self.proc.stdin

    def done(self) -> None:
        """A clean end: the servers were stopped here; the guardian exits without acting."""
        if self._pipe is None:
            return
        with contextlib.suppress(OSError):
            self._pipe.write(b"done\n")
            self._pipe.close()
        self._pipe = None
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


if __name__ == "__main__":
    sys.exit(main())
