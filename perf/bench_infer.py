"""pyperf suite: model inference with onnxruntime (the engine's path) vs PyTorch eager.

The model: the repository's NHITS (``models.nhits`` through ``models.train.build_model``, the
default ``TrainConfig``: input window 32 bars x 5 features, horizon 4, quantiles 0.1/0.5/0.9,
scaling in the graph), seeded, exported once by the main process with ``models.export`` (the
same exporter ``gekko export`` uses, parity-checked) into a temporary directory. Every worker
loads the SAME weights twice: as the ONNX file in an onnxruntime session made by
``models.serving.make_session`` (one intra-op thread, full graph optimisation — what the infer
process runs), and as the torch module, run eagerly under ``torch.inference_mode`` with
``torch.set_num_threads(1)``. One core each: the issue asks for figures "on one core".

Benchmarks, ``<engine>-<shape>``; pyperf's value is the time of ONE call:

- ``ort-single`` / ``torch-single``: one window (batch 1), the latency of a forecast;
- ``ort-batch64`` / ``torch-batch64``: 64 instruments in one batched call (predictions/s = 64 /
  time per call);
- ``infer-close64``: the infer process's whole work at a bar close for 64 instruments: 64 bars
  pushed into the ring-buffer windows (``models.windows``), the batch gathered, one onnxruntime
  call, 64 ``Forecast`` messages built.

Every worker also records the time of each single call it measured (not calibration or warm-up
calls); the main process prints p50/p90/p99 from them, the ratios torch / onnxruntime, and the
issue's goals (spec: < 50 ms per inference and >= 1,000 predictions/s; aim: p99 < 200 µs single,
>= 100,000 predictions/s batched). ``python perf/bench_infer.py --fast``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from time import perf_counter_ns
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyperf  # noqa: E402

BATCH = 64
#: meta.json for the exported model (only the fields serving reads matter here)
META = """{"format": 1, "name": "bench", "version": "1", "architecture": "nhits",
"features": ["ret", "range", "log_volume", "tod_sin", "tod_cos"], "target": "ret",
"input_size": INPUT, "horizon": HORIZON, "quantiles": [0.1, 0.5, 0.9], "bar_seconds": 1}"""
BENCHMARKS = ("ort-single", "torch-single", "ort-batch64", "torch-batch64", "infer-close64")


# --- the model (main process) --------------------------------------------------------------------


def export_model(out_dir: Path) -> None:
    """Build the seeded NHITS, export it (parity-checked) and save the torch module beside it."""
    import torch

    from models.export import export_onnx
    from models.features import compute_features
    from models.scaling import Scaler
    from models.train import TrainConfig, build_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 2000
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    high = close * (1 + np.abs(rng.normal(0, 5e-4, n)))
    low = close * (1 - np.abs(rng.normal(0, 5e-4, n)))
    vol = rng.integers(1, 500, n).astype(np.float64)
    ts = np.arange(n, dtype=np.int64) * 10**9
    feats = compute_features(close, high, low, close, vol, ts)
    cfg = TrainConfig()
    model = build_model(cfg, Scaler.fit(feats, cfg.scaler))
    model.eval()
    export_onnx(model, out_dir / "model.onnx", cfg.input_size)
    torch.save(model, out_dir / "model.pt")
    (out_dir / "shape.txt").write_text(f"{cfg.input_size} {len(cfg.quantiles)} {cfg.horizon}")


# --- sessions (worker processes) -----------------------------------------------------------------


class Session:
    """One benchmark's model and inputs, alive for the pyperf worker's lifetime."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.name = name
        d = Path(args.model_dir)
        self.L, _nq, self.H = (int(v) for v in (d / "shape.txt").read_text().split())
        rng = np.random.default_rng(1)
        engine, shape = name.split("-")
        b = 1 if shape == "single" else BATCH
        self.x = (rng.normal(0, 1, (b, self.L, 5)) * 1e-3).astype(np.float32)
        self.samples: list[np.ndarray] = []
        self.calls = 0
        if engine == "torch":
            import torch

            torch.set_num_threads(1)
            self.torch = torch
            self.model = torch.load(d / "model.pt", weights_only=False)
            self.model.eval()
            self.xt = torch.from_numpy(self.x)
            self.call = self._torch
        else:
            from models.serving import make_session

            self.sess = make_session(d / "model.onnx", ["cpu"], intra_op_threads=1)
            self.call = self._ort if engine == "ort" else self._close
            if engine == "infer":
                self._setup_close()
        for _ in range(200):  # warm: first calls allocate arenas and pick kernels
            self.call()

    def _ort(self) -> Any:
        return self.sess.run(["point", "quantiles"], {"x": self.x})

    def _torch(self) -> Any:
        with self.torch.inference_mode():
            return self.model(self.xt)

    def _setup_close(self) -> None:
        """The infer process's own state machine (procs.infer.InferEngine) on 64 instruments,
        serving this model; each call closes one bar for all of them."""
        from types import SimpleNamespace

        from models.serving import ModelServer
        from procs.infer import InferEngine

        d = Path(self.args.model_dir)
        (d / "meta.json").write_text(
            META.replace("INPUT", str(self.L)).replace("HORIZON", str(self.H))
        )
        inference = SimpleNamespace(
            instruments=[],
            model_dir=str(d),
            providers=["cpu"],
            intra_op_threads=1,
            bar_seconds=1.0,
            every_n_ticks=0,
            horizon=0,
            mismatch="refuse",
            drift_margin=0.0,
            drift_z=3.0,
            drift_window=500,
            coverage_tolerance=0.05,
            input_drift_psi=0.25,
        )
        instruments = [SimpleNamespace(symbol=f"S{k}", instrument_id=k + 1) for k in range(BATCH)]
        cfg = SimpleNamespace(inference=inference, instruments=instruments)
        self.eng = InferEngine(cfg, server=ModelServer(d, providers=["cpu"]))
        self.eng.poll_model()
        rng = np.random.default_rng(2)
        self.px = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (4096, BATCH)), axis=0))
        self.k = 0
        bars = self.eng.bars
        bars.valid[:] = True
        bars.volume[:] = 100.0
        for _ in range(self.L):
            self._close()

    def _close(self) -> list[Any]:
        bars = self.eng.bars
        row = self.px[self.k % 4096]
        self.k += 1
        bars.closed_start_ns = self.k * 10**9
        np.multiply(row, 1.0005, out=bars.high)
        np.multiply(row, 0.9995, out=bars.low)
        bars.close[:] = row
        out: list[Any] = []
        self.eng._on_close(0, 0, out)
        return out

    def __call__(self, loops: int) -> float:
        self.calls += 1
        call = self.call
        record = self._recording()
        ts = np.empty(loops + 1, dtype=np.int64) if record else None
        t0 = perf_counter_ns()
        if ts is not None:
            for i in range(loops):
                ts[i] = perf_counter_ns()
                call()
            ts[loops] = perf_counter_ns()
            self.samples.append(np.diff(ts))
            return (ts[loops] - ts[0]) * 1e-9
        for _ in range(loops):
            call()
        return (perf_counter_ns() - t0) * 1e-9

    def _recording(self) -> bool:
        a = self.args
        if not a.worker or not a.samples_dir:
            return False
        if a.calibrate_loops or a.recalibrate_loops or a.calibrate_warmups or a.recalibrate_warmups:
            return False
        return self.calls > (a.warmups or 0)

    def close(self) -> None:
        if self.samples and self.args.samples_dir:
            np.save(
                os.path.join(self.args.samples_dir, f"{self.name}.{os.getpid()}.npy"),
                np.concatenate(self.samples),
            )
            self.samples = []


_SESSIONS: dict[str, Session] = {}


def make_func(args: argparse.Namespace, name: str) -> Any:
    def func(loops: int) -> float:
        s = _SESSIONS.get(name)
        if s is None:
            s = _SESSIONS[name] = Session(args, name)
        return s(loops)

    return func


def _close_sessions() -> None:
    while _SESSIONS:
        _, s = _SESSIONS.popitem()
        s.close()


# --- summary (main process) ----------------------------------------------------------------------


def _fmt(sec: float) -> str:
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} µs"
    return f"{sec * 1e3:8.2f} ms"


def print_summary(results: dict[str, pyperf.Benchmark], samples_dir: str) -> None:
    med = {n: b.median() for n, b in results.items()}
    pct: dict[str, tuple[float, float, float, int]] = {}
    for name in med:
        files = glob.glob(os.path.join(samples_dir, f"{glob.escape(name)}.*.npy"))
        if files:
            ns = np.concatenate([np.load(f) for f in files]).astype(np.float64)
            p50, p90, p99 = np.percentile(ns, [50, 90, 99]) * 1e-9
            pct[name] = (p50, p90, p99, ns.size)
    per_call = {n: (BATCH if ("batch" in n or "close" in n) else 1) for n in med}
    w = print
    w("")
    w(f"bench_infer — {os.cpu_count()} CPUs, one thread per engine")
    w(
        f"{'benchmark':<16} {'median/call':>12} {'p50':>11} {'p90':>11} {'p99':>11} "
        f"{'pred/s':>10} {'pred/s@p50':>11}"
    )
    for n in BENCHMARKS:
        if n not in med:
            continue
        p = pct.get(n)
        cols = " ".join(f"{_fmt(v):>11}" for v in p[:3]) if p else f"{'-':>11} " * 3
        at50 = f"{per_call[n] / p[0]:>11,.0f}" if p else f"{'-':>11}"
        w(f"{n:<16} {_fmt(med[n]):>12} {cols} {per_call[n] / med[n]:>10,.0f} {at50}")
    w("(median/call: pyperf's median of per-run means; p50..p99: of every single measured call;")
    w(" pred/s = predictions per second at that time per call)")
    w("")
    w("PyTorch eager / onnxruntime (time per call; > 1: onnxruntime ahead)")
    for shape in ("single", "batch64"):
        a, b = med.get(f"torch-{shape}"), med.get(f"ort-{shape}")
        if a and b:
            w(f"  {shape:<8} {a / b:6.2f}x")
    w("")
    w("goals")

    def goal(label: str, value: float | None, ok: bool, text: str) -> None:
        mark = "n/a" if value is None else ("met" if ok else "NOT met")
        w(f"[{mark:^7}] {label}: {text if value is not None else 'not measured'}")

    single = pct.get("ort-single")
    p99 = single[2] if single else med.get("ort-single")
    goal(
        "spec: one inference < 50 ms",
        p99,
        bool(p99 and p99 < 0.05),
        p99 and f"p99 {_fmt(p99).strip()}",
    )
    goal(
        "aim: p99 single < 200 µs", p99, bool(p99 and p99 < 200e-6), p99 and f"{_fmt(p99).strip()}"
    )
    bt = med.get("ort-batch64")
    rate = BATCH / bt if bt else None
    goal(
        "spec: >= 1,000 predictions/s", rate, bool(rate and rate >= 1e3), rate and f"{rate:,.0f}/s"
    )
    b50 = pct.get("ort-batch64")
    r50 = f", {BATCH / b50[0]:,.0f}/s at the p50 call" if b50 else ""
    goal(
        "aim: >= 100,000 predictions/s batched, one core (median)",
        rate,
        bool(rate and rate >= 1e5),
        rate and f"{rate:,.0f}/s{r50}",
    )


def _add_cmdline_args(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(("--model-dir", args.model_dir))
    if args.samples_dir:
        cmd.extend(("--samples-dir", args.samples_dir))
    if args.only:
        cmd.extend(("--only", args.only))


def main() -> None:
    runner = pyperf.Runner(processes=6, values=3, add_cmdline_args=_add_cmdline_args)
    runner.metadata["description"] = "NHITS inference: onnxruntime vs PyTorch eager, one core"
    runner.argparser.add_argument(
        "--only",
        metavar="REGEX",
        default=None,
        help="run only the benchmarks whose name matches REGEX",
    )
    runner.argparser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    runner.argparser.add_argument("--samples-dir", default=None, help=argparse.SUPPRESS)
    args = runner.parse_args()
    owned: list[str] = []
    if not args.worker:
        if not args.model_dir:
            args.model_dir = tempfile.mkdtemp(prefix="bench_infer_model_")
            owned.append(args.model_dir)
            export_model(Path(args.model_dir))
        if not args.samples_dir:
            args.samples_dir = tempfile.mkdtemp(prefix="bench_infer_samples_")
            owned.append(args.samples_dir)
    results: dict[str, pyperf.Benchmark] = {}
    try:
        for name in BENCHMARKS:
            if args.only and not re.search(args.only, name):
                continue
            bench = runner.bench_time_func(name, make_func(args, name))
            _close_sessions()
            if bench is not None:
                results[name] = bench
        if not args.worker and results:
            print_summary(results, args.samples_dir)
    finally:
        _close_sessions()
        for d in owned:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
