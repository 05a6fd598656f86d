"""The engine's ring decoder: one msgspec decoder for the ``engine.messages`` union.

Why it exists: the transport (``shm``) knows no trading, so whoever opens a ring consumer passes
the decoder for what its producer publishes; the engine's processes, the supervisor and the
benchmarks of the pipeline pass this one. A msgspec decoder keeps no state between calls, so one
is shared by every consumer of a process.
"""

from __future__ import annotations

import msgspec

from engine.messages import Message

MESSAGE_DECODER = msgspec.msgpack.Decoder(Message)
