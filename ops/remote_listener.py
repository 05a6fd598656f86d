"""The supervisor's listener for remote control commands on the Redis bus.

Why in the supervisor, on its own thread, and not in the bridge worker: a verified command must
end in the supervisor's inbox, the one path every operator command takes to the control ring
(with its audit row). Verifying where it is used means no second local hop whose word would
have to be trusted; and it keeps trading processes free of Redis waits. Only when
``[security.remote_control] enabled`` is true does this run at all.

It reads ``gk:{<id>}:remote_control`` with XREAD from the last entry present when it started
(never acting on an old command: those would have expired anyway), checks each entry
(ops/remote_control.py ``Verifier``), hands accepted ones to ``submit`` and records every
refusal through ``record`` (the supervisor audits it). A Redis failure is logged and retried
with backoff; it never stops the engine.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ops.remote_control import Command, NonceStore, Verdict, Verifier, result_key, stream_key
from ops.roles import RefusalThrottle, RoleMap

log = logging.getLogger("gekko.remote_control")

Submit = Callable[[Command], str]  # -> "forwarded", or why not
Record = Callable[[str, str, dict[str, Any]], None]  # (actor, action, detail): an audit row
RESULT_TTL_S = 120


class RemoteListener:
    """One daemon thread; ``stop`` ends it within a read's block time."""

    def __init__(
        self,
        engine_id: str,
        section: Any,
        roles: RoleMap,
        connect: Callable[[], Any],
        submit: Submit,
        record: Record,
        *,
        block_ms: int = 200,
    ) -> None:
        self.engine_id = engine_id
        self.section = section
        self.roles = roles
        self.connect = connect
        self.submit = submit
        self.record = record
        self.block_ms = block_ms
        self.accepted = 0
        self.refused = 0
        self.ready = threading.Event()  # set once it reads the stream
        self.throttle = RefusalThrottle()  # anyone on the bus could flood the audit log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="remote-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        delay, last_id, client = 0.0, "", None
        while not self._stop.is_set():
            try:
                if client is None:
                    client = self.connect()
                    verifier = Verifier(
                        self.engine_id, self.section, self.roles, NonceStore(client, self.engine_id)
                    )
                    if not last_id:  # only what is published from now on
                        newest = client.xrevrange(stream_key(self.engine_id), count=1)
                        last_id = newest[0][0].decode() if newest else "0-0"
                    self.ready.set()
                last_id = self._read(client, verifier, last_id)
                delay = 0.0
            except Exception as exc:
                if delay == 0.0:
                    log.error("remote control: Redis failed (%s); retrying with backoff", exc)
                delay = min(2.0, delay * 2 or 0.05)
                client = _closed(client)
                self._stop.wait(delay)
        _closed(client)  # an embedded Redis is not stopped while a client is connected

    def _read(self, client: Any, verifier: Verifier, last_id: str) -> str:
        resp = client.xread({stream_key(self.engine_id): last_id}, count=64, block=self.block_ms)
        for _stream, entries in resp or []:
            for eid, fields in entries:
                last_id = eid.decode() if isinstance(eid, bytes) else str(eid)
                try:  # one entry that breaks a check is logged and passed, never re-read
                    self.handle(client, verifier.check(fields, time.time_ns()), last_id)
                except Exception as exc:
                    log.error("remote control: entry %s not handled (%r): ignored", last_id, exc)
        return last_id

    def handle(self, client: Any, v: Verdict, entry_id: str) -> str:
        """Act on one verdict; what became of it (also written to the result key)."""
        cmd = v.cmd
        detail: dict[str, Any] = {
            "via": "remote",
            "entry_id": entry_id,
            "engine_id": self.engine_id,
        }
        if cmd is not None:
            detail.update(op=cmd.op, command=cmd.command[:200], nonce=cmd.nonce, signed=v.signed)
            detail["claimed_operator" if not v.signed else "operator"] = cmd.operator
        if v.why:
            result = f"refused: {v.why}"
        else:
            assert cmd is not None
            got = self.submit(cmd)
            result = "forwarded" if got == "forwarded" else f"refused: {got}"
        if result == "forwarded":
            self.accepted += 1
        else:
            self.refused += 1
            actor = cmd.operator if (cmd is not None and v.signed) else "unknown (remote)"
            held = self.throttle.take("remote", time.monotonic())
            if held is not None:
                log.warning("remote control: %s (entry %s)", result, entry_id)
                if held:
                    detail["suppressed_before"] = held
                self.record(actor, "operator.refused", {**detail, "reason": result[9:]})
        if cmd is not None:
            try:  # first word wins: a replay does not overwrite the original's result
                client.set(
                    result_key(self.engine_id, cmd.nonce),
                    json.dumps({"result": result, "entry_id": entry_id}),
                    nx=True,
                    ex=RESULT_TTL_S,
                )
            except Exception as exc:  # informational only: the audit row is the record
                log.warning("remote control: result not written (%s)", exc)
        return result


def _closed(client: Any) -> None:
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # closing what failed: nothing more to do
            log.debug("remote control: closing the Redis client: %s", exc)


def start_listener(
    cfg: Any, roles: RoleMap, submit_item: Callable[[Any], str], record: Record
) -> RemoteListener:
    """The supervisor's listener: an accepted command becomes a ``ControlItem`` (actor: the
    operator, via "remote") for ``submit_item``, the socket's own path to the control ring."""
    from engine.messages import ControlCommand
    from ops.control import ControlItem
    from ops.store.redis_store import connect

    def submit(cmd: Command) -> str:
        kind = ControlCommand[cmd.op.upper()]
        item = ControlItem(int(kind), cmd.command[:200], cmd.operator, None, "remote")
        item.detail.update(nonce=cmd.nonce)
        return submit_item(item)

    listener = RemoteListener(
        cfg.engine.id, cfg.security.remote_control, roles, lambda: connect(cfg), submit, record
    )
    listener.start()
    return listener
