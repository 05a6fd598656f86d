"""Redis Streams as the cross-host bus: ids that make publishing idempotent, consumer groups,
acknowledgements, and discarding what was already delivered.

Delivery is at-least-once end to end, and duplicates are discarded by id on both sides:

- **Ids.** A frame of local ring ``r`` becomes the entry ``<epoch>-<seq>`` of stream
  ``gk:{<engine>}:s:<r>``: ``seq`` is the frame's sequence number in the ring, ``epoch`` a
  millisecond time fixed for one run of the engine (the ring's creation time, moved past the
  stream's last entry if a clock ran backwards). A bridge that restarts inside the run resends the
  frames it may not have acknowledged to the ring; they carry the same ids, and Redis refuses an
  id that is not greater than the stream's last (counted as ``xadd_duplicates``, not an error).
  A new run has a later epoch, so its entries follow the previous run's, in order.
- **Groups.** Each subscribing engine reads a remote stream through its own consumer group
  (default: its engine id) with one consumer, so entries arrive in stream order. An entry is
  acknowledged (XACK) only after it is in the local ring. After a restart the consumer first
  re-reads its pending entries (delivered, never acknowledged), then new ones.
- **Dedupe.** The last id delivered into the local ring is kept per stream in
  ``gk:{<engine>}:bridge:seen``, written before the XACK; a re-delivered entry at or below it is
  acknowledged and dropped (``remote_duplicates``).

- **Authentication.** With a key, each entry also carries ``q`` (its sequence number, the id it
  was given) and ``mac``; the receiving bridge checks them (``procs.bridge_auth``) before the
  dedupe above, and keeps its own record of the sequences accepted, which Redis cannot roll back.

This module also holds the bridge worker's entry point (``run``): the loop lives in
``procs.bridge`` and gets the bus from here, so ``procs`` never imports ``ops``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from ops.store.redis_store import key

log = logging.getLogger("gekko.bus")

Entry = tuple[str, str, dict[bytes, bytes]]  # (stream, id, fields)


def stream_name(engine_id: str, ring: str) -> str:
    return key(engine_id, "s", ring)


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    s = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def _is_dup_error(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and "equal or smaller" in str(exc)


class StreamBus:
    """XADD with our own ids, consumer-group reads, acknowledgements, delivered-id bookkeeping."""

    def __init__(self, client: Any, engine_id: str, *, maxlen: int = 1_000_000) -> None:
        self.client = client
        self.engine_id = engine_id
        self.maxlen = maxlen
        self._seen_key = key(engine_id, "bridge", "seen")
        self._seen: dict[str, tuple[int, int]] = {}

    # --- producing -------------------------------------------------------------------------
    def epoch_for(
        self,
        stream: str,
        run_ms: int,
        run_id: str,
        *,
        authentic: Callable[[dict[bytes, bytes]], bool] | None = None,
    ) -> int:
        """The id epoch (ms) for this run on ``stream``: stable across bridge restarts in the run.

        If the stream's last entry belongs to this run, its epoch is ours; otherwise the run's
        time, moved past the last entry's time should a clock have gone backwards. With
        ``authentic`` (the MAC check of our own entries), a last entry that fails it is not ours
        whatever its ``run`` field says (someone else wrote into our stream).
        """
        last = self.client.xrevrange(stream, count=1)
        if not last:
            return run_ms
        last_id, fields = last[0]
        last_ms, _ = parse_id(last_id)
        if fields.get(b"run") == run_id.encode() and (authentic is None or authentic(fields)):
            return last_ms
        return max(run_ms, last_ms + 1)

    def publish(
        self,
        stream: str,
        epoch: int,
        frames: Sequence[tuple[int, int, bytes]],
        run_id: str,
        *,
        auth: Sequence[dict[bytes, bytes]] | None = None,
    ) -> tuple[int, int]:
        """XADD ``(seq, type, payload)`` frames as ``<epoch>-<seq>`` in one pipeline.

        ``auth``: per frame, the authentication fields to add (``procs.bridge_auth``).
        Returns (added, duplicates). Any error but "id too small" raises (the caller retries
        the whole batch, which is safe: what got in is refused the second time).
        """
        if not frames:
            return 0, 0
        pipe = self.client.pipeline(transaction=False)
        src = self.engine_id.encode()
        run = run_id.encode()
        for k, (seq, ftype, payload) in enumerate(frames):
            fields = {b"src": src, b"run": run, b"t": ftype, b"m": payload}
            if auth is not None:
                fields.update(auth[k])
            pipe.xadd(
                stream,
                fields,
                id=f"{epoch}-{seq}",
                maxlen=self.maxlen,
                approximate=True,
            )
        added = dups = 0
        for res in pipe.execute(raise_on_error=False):
            if isinstance(res, Exception):
                if _is_dup_error(res):
                    dups += 1
                    continue
                raise res
            added += 1
        return added, dups

    # --- consuming -------------------------------------------------------------------------
    def ensure_group(self, stream: str, group: str, *, start: str = "0") -> None:
        """Create ``group`` on ``stream`` (and the stream) reading after ``start`` (its start,
        or what this engine already accepted); idempotent: an existing group keeps its place."""
        try:
            self.client.xgroup_create(stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def load_seen(self, streams: Iterable[str]) -> None:
        raw = self.client.hgetall(self._seen_key)
        for s in streams:
            v = raw.get(s.encode())
            self._seen[s] = parse_id(v) if v else (-1, -1)

    def read(
        self,
        streams: Sequence[str],
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        pending: bool,
    ) -> list[Entry]:
        """Entries for ``consumer``: its pending ones (``pending=True``) or new ones, in order."""
        start = "0" if pending else ">"
        if isinstance(self.client, RedisCluster) and len(streams) > 1:
            # one XREADGROUP may only name keys of one slot; engines' streams live in different
            # slots (their hash tags): read them one by one, without blocking, then idle once
            resp: Any = []
            for s in streams:
                resp += _items(self.client.xreadgroup(group, consumer, {s: start}, count=count))
            if not any(e for _, e in resp) and block_ms and not pending:
                time.sleep(block_ms / 1000)
        else:
            resp = self.client.xreadgroup(
                group,
                consumer,
                {s: start for s in streams},
                count=count,
                block=None if pending else block_ms,
            )
        out: list[Entry] = []
        for stream, entries in _items(resp):
            sname = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append((sname, eid, fields or {}))
        return out

    def is_new(self, stream: str, entry_id: str) -> bool:
        return parse_id(entry_id) > self._seen.get(stream, (-1, -1))

    def delivered(self, group: str, done: Sequence[tuple[str, str]]) -> None:
        """Record the last delivered id per stream, then acknowledge ``(stream, id)`` pairs."""
        if not done:
            return
        last: dict[str, str] = {}
        by_stream: dict[str, list[str]] = {}
        for stream, eid in done:
            by_stream.setdefault(stream, []).append(eid)
            if parse_id(eid) > self._seen.get(stream, (-1, -1)):
                self._seen[stream] = parse_id(eid)
                last[stream] = eid
        if last:
            self.client.hset(self._seen_key, mapping=last)
        for stream, ids in by_stream.items():
            self.client.xack(stream, group, *ids)


def _items(resp: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP answers a list of [stream, entries] (RESP2) or a dict (RESP3)."""
    if not resp:
        return []
    if isinstance(resp, dict):
        return list(resp.items())
    return [(s, e) for s, e in resp]


# --- the bridge worker's entry point (ops.worker runs ``run``) -------------------------------
def run(cfg: Any, engine_id: str, incarnation: int) -> int:
    from ops.store.redis_store import LatestState, ParamCache, connect
    from procs import bridge

    def factory() -> tuple[StreamBus, LatestState]:
        client = connect(cfg)
        if (
            cfg.source_path and Path(cfg.source_path).is_file()
        ):  # other hosts can check our settings (put_config stores it redacted)
            ParamCache(client).put_config(engine_id, Path(cfg.source_path).read_text())
        return (
            StreamBus(client, engine_id, maxlen=cfg.bridge.maxlen),
            LatestState(client, engine_id, cfg.storage.redis.ttl_s),
        )

    return bridge.run(
        cfg,
        engine_id,
        incarnation,
        factory,
        stream_name=stream_name,
    )
