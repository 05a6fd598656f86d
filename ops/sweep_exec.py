"""Where a sweep's trials run: Ray tasks (a local runtime on this host's cores, or a cluster), or
inline one after another (``gekko sweep --inline``: no Ray, for debugging a trial).

Every submitted trial comes back as a ``TrialResult``, whatever happened to it — that is this
module's contract: a sweep never silently loses a trial.

- Ray retries a task whose worker died (killed, out of memory) and, with ``retry_exceptions``,
  one that raised, up to ``max_retries`` times; after that ``ray.get`` raises a ``RayError``
  (``RayTaskError`` wrapping the trial's exception, ``WorkerCrashedError``, ...), which becomes a
  ``failed`` result naming the error and the attempts made.
- A trial still running after ``trial_timeout_s`` is cancelled (``ray.cancel(force=True)``
  kills its worker; Ray never retries a cancelled task) and reported as ``timeout``.
- Trials that cannot be built come back ``invalid`` from the trial itself and are not retried
  (ops/sweep_trial.py).

Ray is started here with ``address="local"`` (a new runtime of our own, never one found in
/tmp/ray by chance; no dashboard; its node address the loopback one) unless ``[sweep] address``
/ ``--address`` names a cluster; it is shut down when the sweep ends if we started it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from ops.sweep_trial import TrialResult, TrialSpec, result_of, run_trial

log = logging.getLogger("gekko.sweep")

TrialFn = Callable[[TrialSpec], TrialResult]


class InlineExecutor:
    """Each trial runs in this process when it is submitted (retries as Ray would make them)."""

    def __init__(self, fn: TrialFn = run_trial, max_retries: int = 0) -> None:
        self.fn, self.max_retries = fn, max_retries
        self._done: list[TrialResult] = []
        self.parallelism = 1

    def submit(self, spec: TrialSpec) -> None:
        for attempt in range(self.max_retries + 1):
            try:
                self._done.append(self.fn(spec))
                return
            except Exception as exc:  # a trial's crash: the next attempt, or its report
                if attempt == self.max_retries:
                    self._done.append(failed(spec, exc, attempt + 1))

    def pending(self) -> int:
        return len(self._done)

    def next_done(self) -> list[TrialResult]:
        out, self._done = self._done, []
        return out

    def close(self) -> None:
        pass


def failed(spec: TrialSpec, exc: BaseException, attempts: int) -> TrialResult:
    text = (str(exc).strip().splitlines() or [""])[-1] or type(exc).__name__
    return result_of(spec, "failed", f"{type(exc).__name__} after {attempts} attempt(s): {text}")


class DriverState:
    """What ``ray.init`` changes in the calling process and ``ray.shutdown`` leaves changed: the
    environment (``RAY_*``, ``PYTHONBREAKPOINT``, inherited by every process started later) and
    the SIGTERM handler (``sys.exit``). ``restore`` puts them back, so an in-process caller (a
    test session, ``ops.cli.main``) is as it was."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.sigterm = signal.getsignal(signal.SIGTERM)

    def restore(self) -> None:
        for k in set(os.environ) - set(self.env):
            del os.environ[k]
        os.environ.update(self.env)
        if threading.current_thread() is threading.main_thread() and self.sigterm is not None:
            signal.signal(signal.SIGTERM, self.sigterm)


class RayExecutor:
    """Trials as Ray tasks: ``submit`` returns at once, ``next_done`` waits for at least one."""

    def __init__(
        self,
        fn: TrialFn = run_trial,
        *,
        address: str = "",
        num_cpus: int = 0,
        max_retries: int = 2,
        timeout_s: float = 0.0,
        ray_kwargs: dict[str, Any] | None = None,
    ) -> None:
        import ray

        self.ray = ray
        self.started = False
        self._before = DriverState()
        if not ray.is_initialized():
            kw: dict[str, Any] = {
                "log_to_driver": False,  # a trial's own output stays in Ray's logs
                "configure_logging": False,  # our logging stays ours
                **(ray_kwargs or {}),
            }
            if address:  # a cluster: its resources are its own
                ray.init(address=address, **kw)
            else:
                ray.init(
                    address="local",
                    num_cpus=num_cpus or None,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",  # this host's runtime: reached on loopback
                    **kw,
                )
            self.started = True
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.task = ray.remote(fn).options(
            num_cpus=1, max_retries=max_retries, retry_exceptions=True
        )
        self.parallelism = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._refs: dict[Any, tuple[TrialSpec, float]] = {}

    def submit(self, spec: TrialSpec) -> None:
        self._refs[self.task.remote(spec)] = (spec, time.monotonic())

    def pending(self) -> int:
        return len(self._refs)

    def next_done(self) -> list[TrialResult]:
        """The trials that finished (at least one, unless none is pending), and those timed out."""
        if not self._refs:
            return []
        wait = 1.0 if self.timeout_s else None
        ready, _ = self.ray.wait(list(self._refs), num_returns=1, timeout=wait)
        out = [self._collect(ref) for ref in ready]
        if self.timeout_s:
            now = time.monotonic()
            for ref, (spec, t0) in list(self._refs.items()):
                if now - t0 > self.timeout_s:
                    self.ray.cancel(ref, force=True)
                    del self._refs[ref]
                    out.append(result_of(spec, "timeout", f"cancelled after {self.timeout_s:g} s"))
        return out

    def _collect(self, ref: Any) -> TrialResult:
        spec, _ = self._refs.pop(ref)
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            return failed(
                spec, cause if isinstance(cause, BaseException) else exc, self.max_retries + 1
            )

    def close(self) -> None:
        for ref in self._refs:
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        if self.started:
            self.ray.shutdown()
            self._before.restore()
