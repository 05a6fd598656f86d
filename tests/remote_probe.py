"""A strategy for tests: writes every message another engine sent it (``on_remote``) to the
JSON-lines file named in its ``out`` param, so a test can compare them with what that engine did.

Each line is the message's own fields plus ``type`` and ``remote_source``; it is written and
flushed at once, so the file is complete even if the process is killed."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.strategies.base import Strategy, StrategyContext


class RemoteProbe(Strategy):
    def __init__(self, ctx: StrategyContext, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.out = open(str(params["out"]), "ab")  # noqa: SIM115 (held for the whole run)
        self.enc = msgspec.json.Encoder()

    def on_remote(self, source_engine: str, msg: Any, ctx: StrategyContext) -> None:
        row = {
            "type": type(msg).__name__,
            **msgspec.structs.asdict(msg),
            "remote_source": source_engine,
            "own_ctx": ctx is self.ctx,
        }
        self.out.write(self.enc.encode(row) + b"\n")
        self.out.flush()

    def on_stop(self) -> None:
        self.out.close()
