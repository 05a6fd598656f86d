"""Helpers of ``perf/bench_pipeline.py``: the ping strategy, the bench config, the driven pipeline.

``PipelineSession`` runs the multi-process pipeline the way ``gekko run`` does, minus the feed:
it creates the shared-memory regions with the supervisor's own ``_create_regions()``, starts the
strategy, risk and exec workers with the supervisor's ``_start()`` (``python -m ops.worker``), and
plays the feed itself: it owns the producers of the ``md`` and ``control`` rings, writes the
top-of-book table as the feed does, and reads ``events`` (and drains ``orders`` / ``risk``) with
the supervisor's pre-registered gating slots. ``tick()`` publishes one Quote and waits for the
``OrderAccepted`` that quote caused (matched by ``ts_origin == quote.ts_recv``).

``PingStrategy`` answers every quote with one order the simulated exchange accepts and never
fills: a limit buy, IOC, far below the market. The venue acknowledges it and cancels the
remainder at once, so neither risk's open-order count nor its position limit ever grows.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

from engine.codec import MESSAGE_DECODER
from engine.messages import (
    BookSnapshot,
    Control,
    ControlCommand,
    OrderAccepted,
    OrderRejected,
    Quote,
    TimeInForce,
)
from engine.strategies.base import Strategy

ROOT = Path(__file__).resolve().parent.parent
REPO_CONFIG = ROOT / "config.toml"

#: the pipeline's workers (the benchmark process itself plays the feed)
PIPELINE_WORKERS = ("strategy", "risk", "exec")
#: per-stage latency histograms the workers record (worker -> histogram)
STAGE_HISTOGRAMS = {
    "strategy": "tick_to_intent_ns",
    "risk": "tick_to_approval_ns",
    "exec": "tick_to_order_ns",
}


class PipelineError(RuntimeError):
    """The pipeline did not answer (a worker died, hung, or the order came back wrong)."""


# --- the strategy --------------------------------------------------------------------------------
class PingStrategy(Strategy):
    """One far-from-market IOC limit buy per quote: acknowledged, never filled.

    Params: ``offset_ticks`` (how far below the bid, default 1000), ``qty`` (lots, default 1).
    """

    def __init__(self, ctx: Any, params: dict[str, Any]) -> None:
        super().__init__(ctx, params)
        self.offset = int(params.get("offset_ticks", 1000))
        self.qty = int(params.get("qty", 1))

    def on_quote(self, q: Quote) -> None:
        if q.bid_px <= 0:
            return
        px = max(1, q.bid_px - self.offset)
        self.ctx.buy(q.instrument_id, self.qty, px=px, tif=TimeInForce.IOC)


# --- the config ----------------------------------------------------------------------------------
def _toml_key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string has JSON's escapes
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(doc: dict[str, Any]) -> str:
    """Write a config-shaped document (tables of scalars, arrays of tables, nested tables)."""
    out: list[str] = []

    def table(prefix: str, t: dict[str, Any], header: str | None) -> None:
        scalars = {k: v for k, v in t.items() if not _is_table(v) and not _is_table_array(v)}
        if header is not None:
            out.append("")
            out.append(header)
        for k, v in scalars.items():
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in t.items():
            name = f"{prefix}{_toml_key(k)}"
            if _is_table(v):
                table(name + ".", v, f"[{name}]")
            elif _is_table_array(v):
                for item in v:
                    table(name + ".", item, f"[[{name}]]")

    table("", doc, None)
    return "\n".join(out).lstrip("\n") + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def write_bench_config(
    wait: str,
    directory: Path,
    engine_id: str | None = None,
    cpus: dict[str, list[int]] | None = None,
) -> tuple[Any, Path]:
    """A copy of the repo's config.toml for the pipeline bench, written to ``directory``;
    returns (validated cfg, path).

    Unique engine id, var_dir under ``directory``, ``wait`` for every process, CPU pinning from
    ``cpus`` (process -> CPU ids; unpinned otherwise), one instrument (the
    repo's first), ``PingStrategy`` as the only strategy, zero venue latency and jitter, no
    recorder, no staleness guard, and logging at WARNING (the workers share the terminal with
    pyperf).
    """
    from ops.config import load_config

    doc = tomllib.loads(REPO_CONFIG.read_text())
    engine_id = engine_id or "pb" + secrets.token_hex(3)
    doc.setdefault("engine", {}).update(
        id=engine_id, var_dir=str(Path(directory) / "var"), log_level="WARNING"
    )
    procs = doc.setdefault("processes", {})
    for name in ("feed", "strategy", "risk", "exec"):
        procs.setdefault(name, {}).update(wait=wait, cpus=list((cpus or {}).get(name, [])))
    doc["instruments"] = doc["instruments"][:1]
    symbol = doc["instruments"][0]["symbol"]
    doc["strategies"] = [
        {
            "id": 1,
            "path": "perf._pipeline:PingStrategy",
            "instruments": [symbol],
            "params": {"offset_ticks": 1000, "qty": 1},
        }
    ]
    doc.setdefault("sim", {}).update(latency_us=0.0, jitter_us=0.0)
    # the ping's far-off IOC buys are deliberate (never filled), and a benchmark sends orders as
    # fast as it can: risk's price band and order-rate limit do not apply here
    doc.setdefault("risk", {}).update(price_band_pct=0.0, max_orders_per_s=0)
    # no recorder (no process here drains its gating slots) and no staleness guard: a stall of
    # a loaded box must cost a slow tick, not a refused order
    doc.setdefault("storage", {}).setdefault("postgres", {})["mode"] = "off"
    doc["risk"]["max_intent_age_ms"] = 0.0
    sup = doc.setdefault("supervisor", {})
    sup["startup_timeout_s"] = max(float(sup.get("startup_timeout_s", 30.0)), 60.0)
    path = Path(directory) / "config.toml"
    path.write_text(to_toml(doc))
    return load_config(path), path


# --- the multi-process pipeline --------------------------------------------------------------------
class PipelineSession:
    """Strategy, risk and exec as worker processes, driven by this process playing the feed."""

    def __init__(
        self,
        wait: str,
        *,
        tick_timeout_s: float = 2.0,
        startup_timeout_s: float = 60.0,
        on_started: Callable[[PipelineSession], None] | None = None,
        pin: list[int] | None = None,
    ) -> None:
        """Create the regions, start the workers (then call ``on_started(self)``: their pids are
        known), wait until they are READY, publish the venue's book.

        ``pin``: four CPU ids — this process (the driver), strategy, risk, exec — one core each.
        """
        from ops.supervisor import Supervisor

        self.on_started = on_started
        self.wait = wait
        self.tick_timeout_s = tick_timeout_s
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench_pipeline_{wait}_"))
        cpus = None
        if pin:
            if len(pin) != 1 + len(PIPELINE_WORKERS):
                raise ValueError(
                    f"pin needs {1 + len(PIPELINE_WORKERS)} CPU ids (driver, strategy, risk, exec)"
                )
            os.sched_setaffinity(0, {pin[0]})
            cpus = {n: [c] for n, c in zip(PIPELINE_WORKERS, pin[1:], strict=True)}
        self.cfg, self.config_path = write_bench_config(wait, self.tmp, cpus=cpus)
        self.engine_id = self.cfg.engine.id
        self.sup = Supervisor(self.cfg, self.config_path, status=False, out=sys.stderr)
        self.closed = False
        self.ticks = 0
        self.seq = 0
        self.workers_started = False
        self._warm: dict[str, Any] = {}
        ins = self.cfg.instruments[0]
        self.iid = ins.instrument_id
        self.mid = round(ins.initial_price / ins.tick_size)
        try:
            self._open(startup_timeout_s)
        except BaseException:
            self.close()
            raise

    # --- start ---------------------------------------------------------------------------------
    def _open(self, startup_timeout_s: float) -> None:
        # workers are fresh interpreters started with `python -m ops.worker`: make sure they
        # import this checkout (and perf._pipeline, the strategy) whatever the cwd is
        pp = os.environ.get("PYTHONPATH", "")
        if str(ROOT) not in pp.split(os.pathsep):
            os.environ["PYTHONPATH"] = str(ROOT) + (os.pathsep + pp if pp else "")
        sup = self.sup
        sup._create_regions()
        rings = sup.rings
        self.md = rings["md"].producer(
            wait=self.wait,
            timeout_s=self.cfg.rings.publish_timeout_s,
            dead_reader_grace_s=self.cfg.rings.dead_reader_grace_s,
        )
        self.control = rings["control"].producer(wait="backoff", timeout_s=2.0)
        self.events = rings["events"].consumer(
            "supervisor", wait=self.wait, decoder=MESSAGE_DECODER
        )
        self.orders = rings["orders"].consumer(
            "supervisor", wait=self.wait, decoder=MESSAGE_DECODER
        )
        self.risk = rings["risk"].consumer("supervisor", wait=self.wait, decoder=MESSAGE_DECODER)
        for name in PIPELINE_WORKERS:
            sup._start(sup.workers[name])
        self.workers_started = True
        if self.on_started is not None:
            self.on_started(self)
        self._wait_ready(startup_timeout_s)
        # the venue needs a book to match against; strategy and exec see it on md
        self._publish_book()

    def _wait_ready(self, timeout_s: float) -> None:
        from procs.runtime import STATE_READY

        deadline = time.monotonic() + timeout_s
        pending = set(PIPELINE_WORKERS)
        while pending:
            for n in list(pending):
                h = self.sup.workers[n]
                row = self.sup._health(n)
                if h.proc is not None and h.proc.poll() is not None:
                    raise PipelineError(
                        f"worker {n} exited with code {h.proc.returncode} during start-up"
                    )
                if (
                    int(row["state"]) == STATE_READY
                    and h.proc is not None
                    and int(row["pid"]) == h.proc.pid
                ):
                    pending.discard(n)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise PipelineError(f"workers not READY after {timeout_s:.0f}s: {sorted(pending)}")
            time.sleep(0.01)

    def _publish_book(self) -> None:
        m = self.mid
        levels = 10
        t = time.monotonic_ns()
        snap = BookSnapshot(
            self.iid,
            [m - 1 - k for k in range(levels)],
            [100] * levels,
            [m + 1 + k for k in range(levels)],
            [100] * levels,
            t,
            t,
            0,
        )
        self.md.publish(snap)
        self._write_tob(t)

    def _write_tob(self, t: int) -> None:
        m = self.mid
        self.sup.tob.write(0, (self.iid, m - 1, 100, m + 1, 100, 0, t))

    # --- the timed path --------------------------------------------------------------------------
    def run(self, loops: int) -> float:
        """``loops`` ticks, one at a time; the sum of publish-to-ack times in seconds."""
        total = 0.0
        for _ in range(loops):
            total += self.tick()
        return total

    def tick(self) -> float:
        """Publish one Quote; wait for the OrderAccepted it causes; return the elapsed seconds."""
        from time import monotonic_ns, perf_counter

        m = self.mid
        self.seq += 1
        events = self.events
        deadline_s = self.tick_timeout_s
        t0 = perf_counter()
        ts = monotonic_ns()
        self.md.publish(Quote(self.iid, m - 1, 100, m + 1, 100, ts, ts, self.seq))
        self.sup.tob.write(0, (self.iid, m - 1, 100, m + 1, 100, 0, ts))  # as the feed does
        while True:
            ev = events.poll()
            if ev is None:
                if not events.wait_for_data(0.05) and perf_counter() - t0 > deadline_s:
                    self._timeout(ts)
                continue
            if getattr(ev, "ts_origin", None) == ts:
                if type(ev) is OrderAccepted:
                    break
                if type(ev) is OrderRejected:
                    raise PipelineError(f"tick {self.seq}: the order was rejected: {ev.reason}")
            elif perf_counter() - t0 > deadline_s:
                self._timeout(ts)
        dt = perf_counter() - t0
        self.ticks += 1
        self._drain()
        return dt

    def _drain(self) -> None:
        """Read what the supervisor's gating slots would read, so they never hold a producer."""
        self.orders.poll_batch(4096)
        for r in self.risk.poll_batch(4096):
            if type(r) is OrderRejected:
                raise PipelineError(f"risk rejected an order: {r.reason}")

    def _timeout(self, ts: int) -> None:
        dead = []
        for n in PIPELINE_WORKERS:
            p = self.sup.workers[n].proc
            if p is not None and p.poll() is not None:
                dead.append(f"{n} (exit code {p.returncode})")
        what = f"; dead workers: {', '.join(dead)}" if dead else ""
        stats = self.counters()
        raise PipelineError(
            f"tick {self.seq} (ts_recv {ts}): no OrderAccepted within {self.tick_timeout_s:.1f}s "
            f"(wait={self.wait}){what}; counters: {stats}"
        )

    # --- results ---------------------------------------------------------------------------------
    def counters(self) -> dict[str, dict[str, int]]:
        out = {}
        for n in PIPELINE_WORKERS:
            with contextlib.suppress(Exception):
                out[n] = self.sup.metrics[n].counters()
        return out

    def histograms(self, since_warm: bool = False) -> dict[str, Any]:
        """Snapshots of the per-stage latency histograms (worker -> HistogramSnapshot).

        ``since_warm``: only what was recorded after ``mark_warm()`` (bucket counts, count and
        sum are differences; min/max stay those of the whole run). The workers alone write
        their histograms: we subtract copies rather than reset their memory.
        """
        from shm.metrics import H_BUCKETS, H_COUNT, H_SUM, HistogramSnapshot

        out = {}
        for n, h in STAGE_HISTOGRAMS.items():
            with contextlib.suppress(Exception):
                snap = self.sup.metrics[n].hist(h).snapshot()
                base = self._warm.get(n) if since_warm else None
                if base is not None:
                    w = snap.words.copy()
                    w[H_BUCKETS:] -= base.words[H_BUCKETS:]
                    w[H_COUNT] -= base.words[H_COUNT]
                    w[H_SUM] -= base.words[H_SUM]
                    snap = HistogramSnapshot(snap.name, w)
                out[n] = snap
        return out

    def mark_warm(self) -> None:
        """Remember the histograms now: ``histograms(since_warm=True)`` reports what follows."""
        self._warm = self.histograms()

    # --- stop ------------------------------------------------------------------------------------
    def close(self, timeout_s: float = 5.0) -> None:
        """STOP the workers, wait for them (kill stragglers), remove every region."""
        if self.closed:
            return
        self.closed = True
        sup = self.sup
        try:
            if self.workers_started:
                with contextlib.suppress(Exception):
                    self.control.publish(
                        Control(int(ControlCommand.STOP), time.monotonic_ns(), "bench done")
                    )
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline:
                    with contextlib.suppress(Exception):
                        self.events.poll_batch(4096)
                        self._drain_quiet()
                    alive = [
                        h
                        for n, h in sup.workers.items()
                        if n in PIPELINE_WORKERS and h.proc is not None and h.proc.poll() is None
                    ]
                    if not alive:
                        break
                    time.sleep(0.01)
                for n in PIPELINE_WORKERS:
                    h = sup.workers[n]
                    if h.proc is not None and h.proc.poll() is None:
                        h.proc.kill()
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            h.proc.wait(5)
        finally:
            with contextlib.suppress(Exception):
                sup._remove_regions()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drain_quiet(self) -> None:
        self.orders.poll_batch(4096)
        self.risk.poll_batch(4096)

    def leftovers(self) -> list[str]:
        """What this engine id still has in /dev/shm (should be nothing after ``close``)."""
        from shm.region import list_regions, list_semaphores

        return list_regions(self.engine_id) + list_semaphores(self.engine_id)


# --- the inline runtime ----------------------------------------------------------------------------
class InlineSession:
    """The repo's config.toml (its instruments, strategies, limits, venue) in the inline runtime."""

    def __init__(self, config_path: Path = REPO_CONFIG) -> None:
        from ops.config import load_config

        self.cfg = load_config(config_path)
        self.instruments = self.cfg.instrument_table()
        self.limits = self.cfg.risk
        self.specs = self.cfg.strategy_specs()
        self.last: dict[str, Any] = {}

    def run(self, loops: int) -> float:
        """Run ``loops`` ticks of the configured market through a fresh InlineRuntime; the
        seconds ``run()`` took. The ticks are generated beforehand (untimed): what is timed is
        the runtime — strategies, risk, exec, venue, portfolio — not the synthetic market."""
        from engine.backtest import InlineRuntime
        from procs.build import build_market, build_venue

        ticks = list(islice(build_market(self.cfg), loops))
        rt = InlineRuntime(
            self.instruments,
            self.specs,
            self.limits,
            build_venue(self.cfg, self.instruments),
            ticks,
            max_ticks=loops,
        )
        t0 = time.perf_counter()
        summary = rt.run()
        dt = time.perf_counter() - t0
        self.last = {k: summary[k] for k in ("ticks", "new_orders", "fills", "rejects")}
        return dt
