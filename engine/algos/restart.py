"""Restarting exec's algo parents: ``AlgoEngine.snapshot`` and ``AlgoEngine.restore``.

Why a module of its own: bringing parents back after a crash (rebuild as they were, replay what
upstream missed, then decide per parent whether it resumes or ends) is a job apart from running
them, and the policy is long enough to read on its own. The functions work on the engine's state
(``AlgoEngine`` delegates to them); ``engine.algos.recovery`` makes the snapshots from the log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from engine.algos.base import Child, Parent
from engine.algos.recovery import ChildSnapshot, ParentSnapshot
from engine.algos.registry import ALGORITHMS
from engine.messages import AlgoState, OrderAccepted, OrderPartiallyFilled, OrderReplaced

if TYPE_CHECKING:  # the engine calls us: no import cycle
    from engine.algos.engine import AlgoEngine


def snapshot(eng: AlgoEngine) -> list[ParentSnapshot]:
    """Every parent not yet over, and every ended one that still has an open child, as
    ``ParentSnapshot``s (what ``restore`` takes; ``rebuild_parents`` makes the same from
    the algo log, the record and the venue after a crash)."""
    out: list[ParentSnapshot] = []
    for p in eng.parents.values():
        if p.state != AlgoState.WORKING and not p.open_children:
            continue
        out.append(
            ParentSnapshot(
                order=p.original if p.original is not None else p.order,
                start_ns=p.start_ns,
                state=int(p.state),
                filled=p.filled,
                notional_ticks=p.notional_ticks,
                fees=p.fees,
                ending=p.ending,
                target_qty=p.target_qty,
                child_rejects=p.child_rejects,
                children=[
                    ChildSnapshot(
                        client_order_id=c.client_order_id,
                        qty=c.qty,
                        px=c.px,
                        sent_ns=c.sent_ns,
                        leaves=c.leaves,
                        cum=c.cum,
                        is_open=c.is_open,
                        accepted=c.accepted,
                        cancel_sent=c.cancel_sent,
                        outcome=c.outcome,
                        fill_ids=sorted(c.fill_ids),
                        resting=c.resting,
                    )
                    for c in p.children.values()
                ],
                amends=list(p.amends),
                profile=p.saved_profile,
            )
        )
    return out


def restore(
    eng: AlgoEngine, snapshots: Iterable[ParentSnapshot], now_ns: int, replay: Iterable[object] = ()
) -> list[object]:
    """Rebuild parents after an exec restart; returns what to send and publish.

    1. Each parent and its children come back as the snapshot has them (``filled``, the
       children's open quantity and fill ids, the child -> parent links), its algorithm
       rebuilt from the original order and ``start_ns`` (so the schedule's times are the
       original ones), but not yet running.
    2. ``replay`` — venue events about children that upstream never saw as parent events
       (``rebuild_parents``) — goes through the ordinary child-event bookkeeping: each missed
       child fill becomes one parent fill (parent ``cum``/``leaves``; ``OrderFilled`` if it
       completes the parent), each child the venue closed is closed. Algorithm callbacks
       are held during the replay: nothing is sent on the strength of a half-restored state.
    3. The policy, per parent still working:

       - a cancel of the parent was requested before the crash -> it is canceled (open
         children canceled, then one ``OrderCanceled``), as it would have been;
       - its window ended while exec was down (TWAP / VWAP / POV with an end) -> it is NOT
         traded late (a passive TWAP does not sweep either): open children are canceled and
         the parent ends with ``OrderCanceled``, reason ``recovery: ... window ended while
         exec was down``, carrying the unfilled quantity;
       - its algorithm cannot be rebuilt (a VWAP on the RECORDED profile logged by a version
         that did not log the profile, bad parameters) -> ended the same way, reason
         ``recovery: cannot resume: ...``;
       - otherwise it resumes for what is left: a TWAP / VWAP runs its due slice at the next
         ``on_timer`` (catching up to the schedule's target, net of open children — nothing
         is sent twice), an iceberg shows its next child if none is resting, a POV counts
         the market's volume again from now (``on_resume``). A parent amended before the
         crash resumes AMENDED: its quantity, limit and rebased schedule are the last
         logged amend's; a VWAP on recorded volume resumes on the profile it was accepted
         with (both from the algo log).

       Ended parents with children still open (upstream saw the end) get those children
       canceled; a late fill of theirs is counted as an anomaly, never a second end.
    4. A parent whose ``OrderAccepted`` upstream never saw (``announced = False``) gets it;
       one whose last amend's ``OrderReplaced`` upstream never saw gets that.

    Parent ids already known are skipped (counted in ``duplicates``)."""
    eng._begin(now_ns)
    rebuilt = [p for s in snapshots if (p := _rebuild(eng, s, now_ns)) is not None]
    _replay(eng, replay, now_ns)
    for p in rebuilt:
        _resume(eng, p, now_ns)
    return eng._end()


def _rebuild(eng: AlgoEngine, s: ParentSnapshot, now_ns: int) -> Parent | None:
    """Step 1 (and 4) for one snapshot: the parent and its children as they were, not running;
    None for a parent id already known."""
    coid = s.order.client_order_id
    if coid in eng.parents:
        eng.duplicates += 1
        return None
    o = s.order
    p = Parent(
        order=o,
        algo=int(o.algo),
        qty=int(o.qty),
        state=int(s.state),
        filled=int(s.filled),
        notional_ticks=int(s.notional_ticks),
        fees=float(s.fees),
        ending=s.ending,
        target_qty=int(s.target_qty),
        child_rejects=int(s.child_rejects),
        start_ns=int(s.start_ns),
        saved_profile=s.profile,
    )
    for a in s.amends:  # the parent as last amended (fills are replayed against it)
        eng._apply_amend(p, a)
    for cs in s.children:
        c = Child(
            cs.client_order_id,
            int(cs.qty),
            int(cs.px),
            int(cs.sent_ns),
            leaves=int(cs.leaves) if cs.is_open else 0,
            cum=int(cs.cum),
            is_open=bool(cs.is_open),
            accepted=bool(cs.accepted),
            cancel_sent=False,  # a cancel sent before the crash is sent again if needed
            outcome=cs.outcome,
            fill_ids=set(cs.fill_ids),
            resting=bool(cs.resting),
        )
        p.children[c.client_order_id] = c
        eng._child_parent[c.client_order_id] = coid
        if c.is_open:
            p.open_children += 1
            p.open_qty += c.leaves
    eng.parents[coid] = p
    eng.restored += 1
    if p.state == AlgoState.WORKING:
        eng._working[coid] = p
        eng._by_iid.setdefault(o.instrument_id, []).append(p)
        if not s.announced:
            eng._out.append(OrderAccepted.for_order(o, 0, now_ns, now_ns))
        if s.amends and not s.amend_announced:
            o = p.order  # exec died between logging the amend and publishing it
            origin = int(s.amends[-1].origin)  # the request's, as if just answered
            eng._out.append(
                OrderReplaced(
                    coid,
                    o.instrument_id,
                    o.px,
                    max(0, p.qty - p.filled),
                    origin,
                    now_ns,
                    now_ns,
                )
            )
        if s.cancel_requested and not p.ending:
            p.ending = "canceled"
    eng._touch(p)
    return p


def _replay(eng: AlgoEngine, replay: Iterable[object], now_ns: int) -> None:
    """Step 2: what upstream missed, through the normal bookkeeping, callbacks held."""
    for ev in replay:
        pc = eng._child_parent.get(getattr(ev, "client_order_id", None))  # type: ignore[arg-type]
        if pc is None or pc not in eng.parents:
            eng._count("unknown_child")
            continue
        p = eng.parents[pc]
        c = p.children[ev.client_order_id]  # type: ignore[attr-defined]
        if isinstance(ev, OrderPartiallyFilled):
            eng._on_child_fill(p, c, ev, now_ns)
        elif c.is_open:
            eng._child_closed(p, c, "canceled")


def _resume(eng: AlgoEngine, p: Parent, now_ns: int) -> None:
    """Step 3, the policy, for one rebuilt parent: cancel, end, or resume it."""
    if p.state != AlgoState.WORKING:
        eng._cancel_children(p, now_ns)  # ended upstream: nothing may stay open
        return
    if p.ending:
        reason, p.ending = p.ending, ""
        eng._wind_down(p, reason, now_ns)
        return
    try:
        impl = ALGORITHMS[p.algo](eng, p, p.start_ns)
        if p.amends:
            last = p.amends[-1]
            impl.set_rebase(last.rebase_slice, last.rebase_base)
    except Exception as exc:  # AlgoParamError, or a bug: end this parent, not exec
        eng._wind_down(p, f"recovery: cannot resume: {exc}", now_ns)
        return
    end = impl.window_end_ns()
    if end is not None and now_ns >= end:
        eng._wind_down(
            p,
            f"recovery: the {impl.name} window ended while exec was down; "
            f"{p.qty - p.filled} of {p.qty} lots unfilled",
            now_ns,
        )
        return
    p.impl = impl
    eng._guard(p, impl.on_resume, now_ns)
    eng._due(p, now_ns)
