"""Entry point of one worker process: ``python -m ops.worker NAME --config PATH --engine-id ID``.

The supervisor starts each worker this way (a fresh interpreter, not a fork: no state leaks
from the supervisor, and a restart is exactly a first start). The worker ignores SIGINT — a
Ctrl-C in the terminal reaches the whole process group, and the supervisor alone decides the
shutdown order — and treats SIGTERM as "stop now, cleanly".
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from ops.config import ConfigError, load_config
from ops.fast_exit import exit_now
from ops.fsperm import PRIVATE_UMASK
from ops.logs import setup_logging
from ops.venue_run import OVERLAY_ENV, read_overlay

WORKER_MODULES = {
    "feed": "procs.feed",
    "strategy": "procs.strategy",
    "risk": "procs.risk",
    "exec": "procs.exec",
}
# the bridge's loop lives in procs.bridge; its entry is in ops because it needs the Redis store
WORKER_MODULES["bridge"] = "ops.store.bus"
WORKER_MODULES["infer"] = "procs.infer"
WORKER_MODULES["recorder"] = "procs.recorder"
#: workers that reach PostgreSQL (the recorder writes; exec and risk recover from it at start)
STORE_USERS = ("recorder", "exec", "risk")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gekko-worker")
    ap.add_argument("name", choices=sorted(WORKER_MODULES))
    ap.add_argument("--config", required=True)
    ap.add_argument("--engine-id", required=True)
    ap.add_argument("--incarnation", type=int, default=0)
    args = ap.parse_args(argv)
    os.umask(PRIVATE_UMASK)  # as `gekko` sets it (ops/fsperm.py), also for a worker run by hand
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # a run on real venues: its instruments, markets and live venues as the supervisor's
        # pre-flight resolved them (ops/venue_run.py), the same for every worker
        cfg = load_config(args.config, overlay=read_overlay(os.environ.get(OVERLAY_ENV)))
    except ConfigError as exc:
        print(f"gekko: {exc}", file=sys.stderr)
        return 2
    setup_logging(
        args.name,
        cfg.engine.log_level,
        cfg.engine.log_format,
        engine_id=args.engine_id,
        incarnation=args.incarnation,
        stdout=True,
    )
    if args.name in STORE_USERS and cfg.storage.postgres.mode != "off":
        from ops.store.sink import install

        install()  # procs may not import ops: the store registers itself with procs.storage
    module = importlib.import_module(WORKER_MODULES[args.name])
    try:
        return int(module.run(cfg, args.engine_id, args.incarnation) or 0)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception:
        logging.getLogger("gekko").exception("%s crashed", args.name)
        return 1


if __name__ == "__main__":
    exit_now(main())
