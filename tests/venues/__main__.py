"""Run one local exchange server as a process (for cross-process and real-process tests).

    python -m tests.venues <binanceus|coinbase|kraken> [--port N] [--capture PATH] [--speed X]
        [--key K --secret S [--password P]] [--balance ASSET=AMOUNT ...]

Prints ``READY <port>`` on stdout once listening and serves until SIGTERM/SIGINT. Faults are
armed over HTTP: ``POST /__control/fault {"name": ..., ...}`` (see tests/venues/core.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.venues import KINDS, server_class


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.venues")
    p.add_argument("kind", choices=sorted(KINDS))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--capture", default=None, help="market data capture (binanceus)")
    p.add_argument(
        "--speed", type=float, default=None, help="capture replay pace (binanceus; 0 = no pauses)"
    )
    p.add_argument("--key", default=None)
    p.add_argument("--secret", default=None)
    p.add_argument("--password", default="")
    p.add_argument("--withdraw", action="store_true", help="--key may withdraw (permission probe)")
    p.add_argument(
        "--balance", action="append", default=[], help="ASSET=AMOUNT for --key's account"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cls = server_class(args.kind)
    kwargs: dict[str, object] = {"port": args.port}
    if args.capture:
        kwargs["capture"] = args.capture
    if args.speed is not None:
        kwargs["speed"] = args.speed
    server = cls(**kwargs)
    if args.key:
        balances = dict(b.split("=", 1) for b in args.balance)
        server.add_key(
            args.key,
            args.secret or "",
            password=args.password,
            balances=balances,
            withdraw=args.withdraw,
        )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    server.start()
    print(f"READY {server.port}", flush=True)
    try:
        done.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
