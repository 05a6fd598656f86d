"""``gekko db audit --verify``: prove the audit log's hash chains intact, or name the first break.

For each engine, its chain is walked from its genesis in ``seq`` order and every row's hash is
recomputed (``ops.store.audit_chain``). What a change made directly in the database leaves:

- **altered** — a row whose contents no longer match its hash (an UPDATE); or a row whose hash
  was rewritten, which the next row still names the old value of;
- **deleted** — a gap in ``seq`` (the rows between the two neighbours named are gone), or an
  anchor naming a ``seq`` beyond the chain's end (rows cut off its end);
- **inserted** — a row written after the chain began that holds no place in it (no ``seq``), a
  second row claiming a place another row holds, or a row neither linked nor hashed by Gekko;
- **rewritten** — an anchor whose hash the chain no longer has at that ``seq``: a row at or
  before it was changed and the chain re-hashed after it (the rows between the last anchor that
  still matches and this one are named).

The rows from before the chain (migration 0008) are checked against the count and digest each
genesis froze. Breaks are reported in the order of the log (by row id); the first is the answer.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ops.store.audit_anchor import Anchor
from ops.store.audit_chain import TAMPERED, genesis_hash, legacy_digest, read_legacy, row_hash

_ROWS_SQL = (
    "SELECT id, engine_id, seq, prev_hash, hash, ts, actor, action, detail::text, run_id,"
    " event_hash FROM audit_log ORDER BY id"
)
_GENESIS_SQL = (
    "SELECT engine_id, created_at, legacy_rows, legacy_last_id, legacy_sha256, hash"
    " FROM audit_genesis ORDER BY engine_id"
)
_LAST = 1 << 62  # a position after every row


class Row(NamedTuple):
    id: int
    engine_id: str | None
    seq: int | None
    prev_hash: bytes | None
    hash: bytes | None
    ts: dt.datetime
    actor: str
    action: str
    detail: str
    run_id: int
    event_hash: bytes | None

    def recomputed(self) -> bytes | None:
        if self.engine_id is None or self.seq is None or self.prev_hash is None:
            return None
        return row_hash(
            self.engine_id,
            self.seq,
            self.ts,
            self.actor,
            self.action,
            self.detail,
            self.run_id,
            self.event_hash,
            self.prev_hash,
        )

    @property
    def authentic(self) -> bool:
        return self.hash is not None and self.recomputed() == self.hash


@dataclass(frozen=True)
class Break:
    kind: str  # altered | deleted | inserted | rewritten
    engine_id: str
    pos: int  # where in the log (a row id): breaks are reported in this order
    text: str

    def line(self) -> str:
        return f"{self.kind}: {self.text}"


@dataclass
class Chain:
    """What the walk of one engine's chain found."""

    engine_id: str
    rows: int = 0
    last_seq: int = 0
    anchors: int = 0
    hashes: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # seq -> (id, hash)


@dataclass
class Report:
    chains: list[Chain] = field(default_factory=list)
    breaks: list[Break] = field(default_factory=list)
    legacy_rows: int = 0
    frozen: bool = False  # a genesis holds the legacy rows' digest
    problems: list[str] = field(default_factory=list)  # anchors that could not be read

    @property
    def intact(self) -> bool:
        return not self.breaks


def _bytes(v: Any) -> bytes | None:
    return bytes(v) if v is not None else None


def load_rows(conn: Any) -> list[Row]:
    out = []
    for r in conn.execute(_ROWS_SQL).fetchall():
        rid, eid, seq, prev, h, ts, actor, action, detail, run_id, ev = r
        out.append(
            Row(rid, eid, seq, _bytes(prev), _bytes(h), ts, actor, action, detail, run_id,
                _bytes(ev))
        )  # fmt: skip
    return out


def _where(r: Row) -> str:
    return f"id {r.id} (seq {r.seq}, {r.action} by {r.actor})"


def _tampered(engine_id: str, row: Row) -> Break:
    """The writer's own record that the head it had written was gone when it wrote next."""
    try:
        d = json.loads(row.detail)
        seq, found = int(d["expected_seq"]), str(d["found"])
    except (ValueError, KeyError, TypeError):
        seq, found = 0, "?"
    text = (
        f"engine {engine_id!r} seq {seq}: {found} when {_where(row)} was written: rows deleted"
        " or rewritten in the database while the engine ran (recorded by its writer)"
    )
    return Break("deleted" if found == "missing" else "rewritten", engine_id, row.id, text)


def walk(engine_id: str, start: bytes, rows: Sequence[Row], out: list[Break]) -> Chain:
    """Walk one engine's rows (by seq, then id) from the genesis hash ``start``."""
    chain = Chain(engine_id)
    by_seq: dict[int, list[Row]] = defaultdict(list)
    for r in rows:
        by_seq[r.seq].append(r)  # type: ignore[index]
    expected, prev_hash, prev = 1, start, None
    for seq in sorted(by_seq):
        cands = by_seq[seq]
        if seq < expected:  # a place before the chain's start (seq 0 or negative)
            for c in cands:
                out.append(
                    Break("inserted", engine_id, c.id, f"{_where(c)}: no place in the chain")
                )
            continue
        if seq > expected:
            gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
            after = f"after id {prev.id}" if prev else "at the chain's start"
            out.append(
                Break(
                    "deleted",
                    engine_id,
                    cands[0].id,
                    f"engine {engine_id!r} {gap}: missing ({after}, before id {cands[0].id})",
                )
            )
        good = [c for c in cands if c.prev_hash == prev_hash and c.authentic]
        row = good[0] if good else cands[0]
        for c in cands:
            if c is not row:
                out.append(
                    Break("inserted", engine_id, c.id, f"{_where(c)}: seq {seq} is id {row.id}'s")
                )
        if not good and seq == expected:
            links, ok = row.prev_hash == prev_hash, row.authentic
            if links:
                text = f"{_where(row)}: its contents no longer match its hash"
                out.append(Break("altered", engine_id, row.id, text))
            elif ok and prev is not None:
                text = (
                    f"{_where(prev)}: its hash was rewritten (the next record, id {row.id},"
                    " names another)"
                )
                out.append(Break("altered", engine_id, prev.id, text))
            elif ok:
                text = f"{_where(row)}: does not follow the engine's genesis"
                out.append(Break("altered", engine_id, row.id, text))
            else:
                text = f"{_where(row)}: neither linked to the record before it nor hashed by Gekko"
                out.append(Break("inserted", engine_id, row.id, text))
        if row.action == TAMPERED:
            out.append(_tampered(engine_id, row))
        chain.rows += 1
        chain.hashes[seq] = (row.id, row.hash or b"")
        expected, prev_hash, prev = seq + 1, row.hash or b"", row  # resync after a break
    chain.last_seq = expected - 1
    return chain


def check_anchors(chain: Chain, anchors: Iterable[Anchor], out: list[Break]) -> None:
    """Every anchor of this engine against its chain, in seq order."""
    matched = 0  # the last seq an anchor confirmed
    for a in sorted(anchors, key=lambda a: (a.seq, a.wall_ns)):
        chain.anchors += 1
        when = dt.datetime.fromtimestamp(a.wall_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        got = chain.hashes.get(a.seq)
        if got is None and a.seq > chain.last_seq:
            first = chain.last_seq + 1
            out.append(
                Break(
                    "deleted",
                    chain.engine_id,
                    _LAST,
                    f"engine {chain.engine_id!r} seq {first}..{a.seq} at least: cut off the"
                    f" chain's end (anchored {when}; the chain ends at seq {chain.last_seq})",
                )
            )
            return
        if got is not None and got[1] != a.hash:
            ids = [chain.hashes[s][0] for s in range(matched + 1, a.seq + 1) if s in chain.hashes]
            out.append(
                Break(
                    "rewritten",
                    chain.engine_id,
                    min(ids) if ids else got[0],
                    f"engine {chain.engine_id!r} seq {matched + 1}..{a.seq}"
                    f" (ids {min(ids) if ids else got[0]}..{got[0]}) differ from the chain"
                    f" anchored {when}: a record among them was changed and the chain re-hashed"
                    " after it, or the newest were deleted and others written in their place",
                )
            )
            return
        if got is not None:
            matched = a.seq


def _genesis_checks(conn: Any, g: tuple, out: list[Break]) -> bytes:
    eid, created, n, last_id, digest, h = g
    digest, h = bytes(digest), bytes(h)
    if genesis_hash(eid, created, n, last_id, digest) != h:
        out.append(Break("altered", eid, 0, f"the genesis of engine {eid!r} was changed"))
    got_n, got_digest = legacy_digest(read_legacy(conn, last_id))
    if (got_n, got_digest) != (n, digest):
        out.append(
            Break(
                "altered",
                eid,
                0,
                f"the records from before the chain (ids <= {last_id}) are not those the genesis"
                f" of engine {eid!r} froze: {got_n} now, {n} then, or their contents differ",
            )
        )
    return h


def verify(conn: Any, anchors: Sequence[Anchor] = ()) -> Report:
    """Check every engine's chain, the rows before the chains, and ``anchors``."""
    rep = Report()
    rows = load_rows(conn)
    genesis = {g[0]: g for g in conn.execute(_GENESIS_SQL).fetchall()}
    rep.frozen = bool(genesis)
    chained: dict[str, list[Row]] = defaultdict(list)
    loose: list[Row] = []
    for r in rows:
        (chained[r.engine_id].append(r) if r.engine_id is not None and r.seq is not None
         else loose.append(r))  # fmt: skip
    first_genesis = min((g[3] for g in genesis.values()), default=None)
    for r in loose:
        if first_genesis is not None and r.id > first_genesis:
            rep.breaks.append(
                Break(
                    "inserted", r.engine_id or "", r.id, f"{_where(r)}: holds no place in a chain"
                )
            )
        else:
            rep.legacy_rows += 1
    by_engine: dict[str, list[Anchor]] = defaultdict(list)
    for a in anchors:
        by_engine[a.engine_id].append(a)
    for eid in sorted(set(chained) | set(genesis) | set(by_engine)):
        if eid in genesis:
            start = _genesis_checks(conn, genesis[eid], rep.breaks)
        else:
            start = b""
            pos = chained[eid][0].id if chained[eid] else _LAST
            rep.breaks.append(Break("deleted", eid, pos, f"the genesis of engine {eid!r}"))
        chain = walk(eid, start, chained[eid], rep.breaks)
        check_anchors(chain, by_engine[eid], rep.breaks)
        rep.chains.append(chain)
    rep.breaks.sort(key=lambda b: b.pos)
    return rep


def format_report(rep: Report) -> list[str]:
    lines = []
    for c in rep.chains:
        lines.append(
            f"engine {c.engine_id!r}: {c.rows} chained records (seq 1..{c.last_seq}),"
            f" {c.anchors} anchors checked"
        )
    if rep.legacy_rows:
        how = "frozen by its genesis" if rep.frozen else "not frozen yet: no chain has begun"
        lines.append(f"{rep.legacy_rows} records from before the chain, {how}")
    lines += [f"warning: {p}" for p in rep.problems]
    lines += [
        f"warning: engine {c.engine_id!r} has no anchors here: rows cut off the end of its"
        " chain, or a chain re-hashed after a change, cannot be seen"
        for c in rep.chains
        if c.rows and not c.anchors
    ]
    if rep.intact:
        lines.append("audit log intact")
        return lines
    lines.append(f"audit log BROKEN: first break: {rep.breaks[0].line()}")
    lines += [f"  then {b.line()}" for b in rep.breaks[1:]]
    return lines
