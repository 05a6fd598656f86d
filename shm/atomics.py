"""Atomic loads, stores and fences on raw shared-memory addresses, as numba intrinsics.

Why this exists: the ring's correctness rests on one guarantee — a reader that sees the
producer's new sequence also sees every byte of the frames published before it. On x86-64 plain
loads and stores almost give that for free (TSO), but on ARM64 (Apple silicon, Graviton) stores
may become visible out of order and loads may be satisfied early. So the producer *publishes* with
a store-release and readers *observe* with a load-acquire; on ARM64 these compile to ``stlr`` /
``ldar``, on x86-64 to plain ``mov`` with the compiler forbidden from reordering around them.

How: each intrinsic below emits the LLVM atomic instruction directly (``load atomic ... acquire``,
``store atomic ... release``, ``fence``, ``cmpxchg``) through llvmlite, so the
ordering is the C++11 memory model's, enforced by the compiler for whatever CPU numba targets —
not an accident of the host architecture. Addresses are plain ``uint64`` integers (the mmap's
address plus an offset): passing scalars keeps numba's call overhead low, which matters because
Python code on the hot path calls these through the jitted kernels of ``shm.kernels``.

Why that is enough: the ring has exactly one producer per sequence word and one writer per
consumer cursor, so release/acquire pairs order all data hand-offs. The only place where a
store must be ordered before a *later load* of another word — the "I am going to sleep" flag of
the ``block`` wait strategy against the producer's "anyone asleep?" check — uses a sequentially
consistent fence on both sides (``fence_seq_cst``), the classic Dekker pattern.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I8 = ir.IntType(8)


def _ptr(builder: ir.IRBuilder, addr: ir.Value, ty: ir.Type = _I64) -> ir.Value:
    return builder.inttoptr(addr, ty.as_pointer())


@intrinsic
def load_acquire(typingctx, addr):  # type: ignore[no-untyped-def]
    """uint64 load with acquire ordering from ``addr`` (8-byte aligned)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load_atomic(_ptr(builder, args[0]), ordering="acquire", align=8)

    return sig, codegen


@intrinsic
def load_relaxed(typingctx, addr):  # type: ignore[no-untyped-def]
    """uint64 load, single-copy atomic (never torn) but unordered."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.load_atomic(_ptr(builder, args[0]), ordering="monotonic", align=8)

    return sig, codegen


@intrinsic
def store_release(typingctx, addr, val):  # type: ignore[no-untyped-def]
    """uint64 store with release ordering: every earlier write is visible before this one."""
    sig = types.void(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.store_atomic(args[1], _ptr(builder, args[0]), ordering="release", align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def store_relaxed(typingctx, addr, val):  # type: ignore[no-untyped-def]
    """uint64 store, single-copy atomic but unordered."""
    sig = types.void(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.store_atomic(args[1], _ptr(builder, args[0]), ordering="monotonic", align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fence_acquire(typingctx):  # type: ignore[no-untyped-def]
    sig = types.void()

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence("acquire")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fence_release(typingctx):  # type: ignore[no-untyped-def]
    sig = types.void()

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence("release")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def fence_seq_cst(typingctx):  # type: ignore[no-untyped-def]
    """Full barrier: orders earlier stores before later loads (StoreLoad)."""
    sig = types.void()

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def cas_u64(typingctx, addr, expected, new):  # type: ignore[no-untyped-def]
    """Compare-and-swap (seq_cst); returns True when ``addr`` held ``expected`` and now holds ``new``."""
    sig = types.boolean(types.uint64, types.uint64, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        res = builder.cmpxchg(_ptr(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)

    return sig, codegen


@intrinsic
def u8_ptr(typingctx, addr):  # type: ignore[no-untyped-def]
    """Turn an integer address into a ``uint8*`` so ``numba.carray`` can view the memory."""
    sig = types.CPointer(types.uint8)(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], _I8.as_pointer())

    return sig, codegen
