"""``gekko state``: an engine's latest state as the bridge keeps it in Redis.

Why a command: the hashes are meant for dashboards and other hosts, but an operator checking
"what does Redis say this engine holds right now" should not need redis-cli and the key layout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from ops.config import ConfigError, load_config


def cmd_state(args: argparse.Namespace) -> int:
    from ops.store.redis_store import PREFIX, RedisUnavailable, connect, key

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"gekko: config error: {exc}", file=sys.stderr)
        return 2
    engine = args.engine or cfg.engine.id
    try:
        client = connect(cfg)
    except RedisUnavailable as exc:
        print(f"gekko: {exc}", file=sys.stderr)
        return 1
    try:
        prefix = key(engine, "")
        names = sorted(
            _text(k)[len(prefix) :] for k in client.scan_iter(match=f"{prefix}*", count=500)
        )
        state: dict[str, Any] = {}
        for name in names:
            if client.type(key(engine, name)) != b"hash" or name.startswith(("bridge:", "config")):
                continue
            raw = client.hgetall(key(engine, name))
            state[name] = {_text(k): _value(_text(v)) for k, v in raw.items()}
    finally:
        client.close()
    if args.json:
        print(json.dumps({"engine": engine, "state": state}))
        return 0
    if not state:
        print(
            f"no latest state for engine {engine!r} in Redis ({PREFIX}:{{{engine}}}:*): is its bridge enabled?"
        )
        return 1
    for name, fields in state.items():
        print(f"{_shown(name)}:")
        for k, v in fields.items():
            print(f"  {_shown(k):<18} {_shown(v)}")
    return 0


def _value(text: str) -> Any:
    """Numbers and JSON objects as such; anything else as the string it is."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return text


def _text(raw: bytes) -> str:
    """Redis bytes as text: anyone on the bus may have written them, UTF-8 or not."""
    return raw.decode("utf-8", "replace")


def _shown(v: Any) -> str:
    """A value for the terminal, its control characters escaped: a bus writer must not be able
    to move the cursor, rewrite lines or set the window title of the operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(v))


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    p = with_config(
        sub.add_parser("state", help="an engine's latest state from Redis (the bridge writes it)")
    )
    p.add_argument("--engine", default="", help="engine id (default: the config's [engine] id)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_state)
