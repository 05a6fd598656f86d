"""When plain Python loads and stores may stand in for the numba acquire/release kernels.

Why: a numba call costs ~200-250 ns of dispatch, as much as the rest of a one-message
``publish`` or ``poll``. On x86-64 the ring's per-message hand-offs need no atomic instruction:

- every aligned 8-byte ``mov`` is single-copy atomic, and CPython reads and writes a ``"Q"``
  memoryview item with one fixed-size 8-byte ``memcpy`` (one ``mov``), so a word is never torn;
- x86-64 is TSO: stores become visible in program order (every store is a release) and loads are
  not reordered with older loads (every load is an acquire). The C compiler cannot move the
  interpreter's memory accesses across the opaque calls between two bytecodes either. So
  "write the frame, then store the position" and "load the position, then read the frame" are
  ordered as ``shm.kernels.commit`` / ``exchange`` order them;
- the one ordering TSO does *not* give is a store before a later load (StoreLoad): the
  "anyone asleep?" checks after a publication or a cursor hand-back (a Dekker hand-shake with a
  ``block`` sleeper). The fast side skips its fence; the side that goes to sleep pays for both
  with ``membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`` (Linux ≥ 4.16) after raising its flag:
  every CPU running a registered process executes a full barrier before the call returns, so
  either the publisher's load saw the flag, or its earlier store is visible to the sleeper's
  re-check (the asymmetric Dekker of liburcu and folly). Registration is inherited by ``fork``.

ARM64 (Apple silicon, Graviton) reorders stores and loads: there the fast path stays off and the
numba kernels (``stlr`` / ``ldar`` / ``dmb``) do the work, as on a kernel without ``membarrier``.
``GEKKO_SHM_PLAIN=0`` turns it off too (the tests run both paths). Sleepers issue the barrier
wherever the plain path may run (x86-64 Linux with the syscall), whatever their own process
chose: the other side may be plain.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

_CMD_QUERY = 0
_CMD_GLOBAL_EXPEDITED = 1 << 1
_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2
_SYSCALL_NR = {"x86_64": 324}  # elsewhere no process takes the plain path: no barrier needed

_syscall = None
_registered_pid = 0


def _probe() -> bool:
    """Whether ``membarrier`` offers the global expedited barrier here (Linux only)."""
    global _syscall
    nr = _SYSCALL_NR.get(platform.machine())
    if not sys.platform.startswith("linux") or nr is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return False
    fn.restype = ctypes.c_long
    fn.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_uint, ctypes.c_int)
    cmds = fn(nr, _CMD_QUERY, 0, 0)
    want = _CMD_GLOBAL_EXPEDITED | _CMD_REGISTER_GLOBAL_EXPEDITED
    if cmds < 0 or cmds & want != want:
        return False
    _syscall = (fn, nr)
    return True


#: the asymmetric barrier exists on this (x86-64 Linux) host: sleepers issue it
MEMBARRIER = _probe()
#: roles made in this process use plain loads/stores on their per-message paths
PLAIN = MEMBARRIER and os.environ.get("GEKKO_SHM_PLAIN", "1") != "0"


def use_plain() -> bool:
    """Whether a role made now in this process takes the plain path (registering the process
    for sleepers' barriers first, once per process; False if that fails)."""
    global _registered_pid
    if not PLAIN or _syscall is None:
        return False
    pid = os.getpid()
    if _registered_pid != pid:
        fn, nr = _syscall
        if fn(nr, _CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) != 0:
            return False
        _registered_pid = pid
    return True


def heavy_barrier() -> None:
    """A full barrier on every CPU running a registered process (a sleeper, after its flag)."""
    if _syscall is not None:
        fn, nr = _syscall
        fn(nr, _CMD_GLOBAL_EXPEDITED, 0, 0)
