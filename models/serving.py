"""Serving forecasting models with ONNX Runtime: sessions, validated loading, hot swap.

Why this module exists apart from training: the runtime engine (``procs/infer.py``) must run on
onnxruntime alone — torch is a training/test extra — so nothing here imports torch.

Three jobs, one per section:

- ``make_session``: an ``InferenceSession`` with the configured execution providers, in order
  (e.g. CUDA, CoreML, CPU). A provider this build of onnxruntime does not have is skipped: the
  serving line names it (a warning only when the list names no provider that is there); CPU is
  always the last resort. Session options favour
  latency over throughput: full graph optimisation, sequential execution, a fixed small intra-op
  thread pool (one thread by default: the infer process owns one core, and thread hand-offs
  cost more than the tiny matmuls of a forecasting MLP).
- ``load_model``: a model directory (``model.onnx`` + ``meta.json``, the model contract) is
  checked before it may serve — meta fields, the feature layout against the features the engine
  computes, the file's sha256 against meta (a truncated or half-copied file fails here, clearly),
  the graph's input/output shapes, and one trial run at two batch sizes (a model exported with a
  frozen batch dimension fails here rather than on the first live bar). Every failure is a
  ``ModelError`` whose message names the file and what is wrong.
- ``ModelServer``: holds the current good model and polls its source (a model directory, or a
  registry directory of version sub-directories) for a new version; a new version is loaded and
  validated off to the side and swapped in only if it passes, so a bad file never replaces a good
  model and the engine keeps forecasting on the last good one. Passing includes fitting the running
  configuration (bar length, horizon, instruments: ``models.guardrails``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from models.conformal import (
    OnlineAdaptive,
    keeps_order,
    offsets_from_meta,
    residuals_from_meta,
    shift,
)
from models.features import FEATURES
from models.guardrails import ServingSpec, misfits

log = logging.getLogger("gekko.models.serving")
# onnxruntime's own process-wide logger writes warnings to stderr (a provider library that is
# missing, say) in its own format; our log lines say what matters: errors only
ort.set_default_logger_severity(3)

#: short names accepted in config.toml for the usual execution providers
PROVIDER_ALIASES: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU = "CPUExecutionProvider"

META_FORMAT = 1
_REQUIRED_META: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "name": str,
    "version": str,
    "features": list,
    "target": str,
    "input_size": int,
    "horizon": int,
    "quantiles": list,
}


class ModelError(Exception):
    """A model that cannot serve; the message names the file and the problem."""


# --- sessions ---------------------------------------------------------------------------------


def first_line(exc: BaseException, limit: int) -> str:
    """An exception's first line for a log or error message (its type when it says nothing)."""
    lines = str(exc).splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def provider_name(name: str) -> str:
    """``"cuda"`` → ``"CUDAExecutionProvider"``; full names pass through unchanged."""
    return PROVIDER_ALIASES.get(name.strip().lower(), name.strip())


def resolve_providers(
    requested: Sequence[str], available: Sequence[str] | None = None
) -> list[str]:
    """The requested providers this onnxruntime build has, in order, CPU always last.

    A list is an order of preference: a missing provider followed by one that is there (the
    default ``["cuda", "coreml", "cpu"]`` on a CPU-only build) is a DEBUG line, and the serving
    line names what was skipped (``ModelServer``). A fallback to a provider the list does not
    name (CPU after ``["cuda"]``) is one WARNING per missing provider, naming the fallback.
    """
    have = set(ort.get_available_providers() if available is None else available)
    wanted = [provider_name(p) for p in requested] or [CPU]
    out: list[str] = []
    for k, p in enumerate(wanted):
        if p in have:
            if p not in out:
                out.append(p)
            continue
        nxt = next((q for q in wanted[k + 1 :] if q in have), None)
        log.log(
            logging.DEBUG if nxt else logging.WARNING,
            "inference: execution provider %s is not available here; falling back to %s",
            p,
            nxt or CPU,
        )
    if CPU not in out:
        out.append(CPU)
    return out


def unavailable_providers(
    requested: Sequence[str], available: Sequence[str] | None = None
) -> list[str]:
    """The requested providers this onnxruntime build lacks (their config names), in order."""
    have = set(ort.get_available_providers() if available is None else available)
    return [p for p in requested if provider_name(p) not in have]


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options for the lowest latency of small models on a dedicated core."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, int(intra_op_threads))
    so.inter_op_num_threads = 1
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = True
    # a spinning pool thread steals a core from the other processes; one thread has no pool
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: our own log says what matters
    return so


def make_session(
    model: str | Path | bytes, providers: Sequence[str] = (CPU,), intra_op_threads: int = 1
) -> ort.InferenceSession:
    """An InferenceSession on the first usable providers of ``providers`` (see module doc).

    A provider that is present but fails to initialise (a CUDA build without a GPU, say) is
    dropped with one log line and the session is created again on the rest.
    """
    chain = resolve_providers(providers)
    src = str(model) if isinstance(model, Path) else model
    while True:
        try:
            return ort.InferenceSession(
                src, sess_options=session_options(intra_op_threads), providers=chain
            )
        except Exception as exc:
            if chain == [CPU]:
                raise
            failed = chain.pop(0)
            log.warning(
                "inference: execution provider %s failed to start (%s); falling back to %s",
                failed,
                first_line(exc, 200),
                chain[0],
            )


# --- models -----------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A validated model, ready to run: ``run(x)`` → (point [b, horizon], quantiles [b, h, q])."""

    path: Path
    meta: dict[str, Any]
    session: ort.InferenceSession
    input_name: str
    input_size: int
    horizon: int
    n_features: int
    quantiles: tuple[float, ...]
    providers: list[str]
    sha256: str
    output_names: list[str] = field(default_factory=lambda: ["point", "quantiles"])
    offsets: np.ndarray | None = None  # conformal offsets [horizon, q] from meta.json, if any
    residuals: np.ndarray | None = None  # their calibration residuals [n, horizon, q]: seed ACI
    _resort: bool = True  # the offsets may cross the model's (monotone) quantiles

    def __post_init__(self) -> None:
        try:  # fitted at train time on held-back data (models/conformal.py); added in run()
            self.offsets = offsets_from_meta(self.meta, self.horizon, self.quantiles)
            self.residuals = residuals_from_meta(self.meta, self.horizon, self.quantiles)
        except ValueError as exc:
            raise ModelError(f"{self.path}/meta.json: {exc}") from None
        self._resort = self.offsets is not None and not keeps_order(self.offsets)

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def bar_seconds(self) -> float:
        return float(self.meta.get("bar_seconds") or 0)

    def run_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``run`` without the fixed offsets (``adaptive_bands`` calibrates them instead)."""
        point, quantiles = self.session.run(self.output_names, {self.input_name: x})
        return point, quantiles

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batched call: ``x`` float32 [batch, input_size, n_features], C-contiguous."""
        point, quantiles = self.session.run(self.output_names, {self.input_name: x})
        if self.offsets is not None:  # calibrated bands: in place, levels kept monotone
            shift(quantiles, self.offsets, self._resort)
        return point, quantiles


def adaptive_bands(
    model: LoadedModel, n_slots: int, mode: str, gamma: float
) -> OnlineAdaptive | None:
    """The per-instrument adaptive conformal state serving ``model`` with ``[inference]
    conformal = mode`` (``models.conformal.OnlineAdaptive``), or None: fixed offsets serve
    (``mode`` "fixed", or a model without stored calibration residuals: logged)."""
    if mode != "adaptive":
        return None
    if model.residuals is None:
        log.warning(
            'inference: [inference] conformal = "adaptive" but model %s %s has no calibration '
            "residuals in meta.json (retrain it with gekko train); serving its fixed offsets",
            model.name,
            model.version,
        )
        return None
    return OnlineAdaptive(
        model.quantiles, model.residuals, gamma, n_slots=n_slots, fixed=model.offsets
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a model directory, checked against the contract's required fields."""
    d = Path(model_dir)
    p = d / "meta.json"
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{p}: missing (a model directory holds model.onnx and meta.json)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{p}: not readable JSON: {exc}") from None
    except RecursionError:  # json's C parser recurses: a deeply nested document
        raise ModelError(f"{p}: not readable JSON: nested too deeply") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{p}: expected a JSON object")
    for key, typ in _REQUIRED_META.items():
        if key not in meta:
            raise ModelError(f"{p}: missing key {key!r}")
        if not isinstance(meta[key], typ) or isinstance(meta[key], bool):
            raise ModelError(
                f"{p}: {key} must be {getattr(typ, '__name__', typ)}, not {meta[key]!r}"
            )
    if meta["format"] != META_FORMAT:
        raise ModelError(
            f"{p}: format {meta['format']} is not supported (this engine reads {META_FORMAT})"
        )
    if meta["input_size"] <= 0 or meta["horizon"] <= 0:
        raise ModelError(f"{p}: input_size and horizon must be > 0")
    return meta


def _dims(arg: Any) -> list[Any]:
    return list(arg.shape or [])


def load_model(
    model_dir: str | Path,
    features: Sequence[str] = FEATURES,
    providers: Sequence[str] = (CPU,),
    intra_op_threads: int = 1,
) -> LoadedModel:
    """Load and validate one model directory; raise ``ModelError`` saying what is wrong."""
    d = Path(model_dir)
    meta = read_meta(d)
    _check_features(meta, features, f"{d}/meta.json")
    onnx_path = d / "model.onnx"
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: missing")
    sha = _sha256(onnx_path)
    want = meta.get("onnx_sha256")
    if want and want != sha:
        raise ModelError(
            f"{onnx_path}: sha256 {sha[:12]}… does not match meta.json's onnx_sha256 {str(want)[:12]}… "
            "(truncated, half-copied or replaced file)"
        )
    try:
        sess = make_session(onnx_path, providers, intra_op_threads)
    except Exception as exc:
        raise ModelError(
            f"{onnx_path}: onnxruntime cannot load it: {first_line(exc, 300)}"
        ) from None
    L, F, H = int(meta["input_size"]), len(features), int(meta["horizon"])
    x_name = _check_signature(sess, onnx_path, L, F)
    model = LoadedModel(
        d,
        meta,
        sess,
        x_name,
        L,
        H,
        F,
        tuple(float(q) for q in meta["quantiles"]),
        list(sess.get_providers()),
        sha,
    )
    _trial_runs(model, onnx_path, len(meta["quantiles"]))
    return model


def _check_features(meta: dict[str, Any], features: Sequence[str], where: str) -> None:
    """The model reads the configured features, in their order, and predicts the first."""
    if list(meta["features"]) != list(features):
        raise ModelError(
            f"{where}: the model's input layout {list(meta['features'])} does not match the "
            f"configured features {list(features)} (same names, same order): refusing to serve it"
        )
    if meta["target"] != features[0]:
        raise ModelError(
            f"{where}: target {meta['target']!r} must be the first feature {features[0]!r}"
        )


def _check_signature(sess: Any, onnx_path: Path, L: int, F: int) -> str:
    """One float32 input [dynamic batch, L, F], outputs 'point' and 'quantiles'; its name."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"{onnx_path}: expected one input 'x', found {[i.name for i in inputs]}")
    x = inputs[0]
    xd = _dims(x)
    if x.type != "tensor(float)" or len(xd) != 3:
        raise ModelError(
            f"{onnx_path}: input {x.name!r} must be float32 [batch, input_size, n_features], is {x.type} {xd}"
        )
    if isinstance(xd[0], int):
        raise ModelError(
            f"{onnx_path}: the batch dimension of {x.name!r} is frozen at {xd[0]}; export it as dynamic"
        )
    if xd[1] != L or xd[2] != F:
        raise ModelError(
            f"{onnx_path}: input {x.name!r} has shape {xd} but meta.json says input_size={L} and "
            f"{F} features: expected [batch, {L}, {F}]"
        )
    outs = {o.name: _dims(o) for o in sess.get_outputs()}
    if "point" not in outs or "quantiles" not in outs:
        raise ModelError(
            f"{onnx_path}: outputs must be 'point' and 'quantiles', found {sorted(outs)}"
        )
    return x.name  # type: ignore[no-any-return]


def _trial_runs(model: LoadedModel, onnx_path: Path, nq: int) -> None:
    """Run on zeros at two batch sizes: a frozen batch dimension shows here, not on a live bar."""
    L, F, H = model.input_size, model.n_features, model.horizon
    for b in (1, 3):
        try:
            point, q = model.run(np.zeros((b, L, F), dtype=np.float32))
        except Exception as exc:
            raise ModelError(
                f"{onnx_path}: trial run at batch {b} failed: {first_line(exc, 300)}"
            ) from None
        if point.shape != (b, H) or q.shape != (b, H, nq):
            raise ModelError(
                f"{onnx_path}: at batch {b} the outputs are point {point.shape}, quantiles {q.shape}; "
                f"meta.json says horizon={H} and {nq} quantiles: expected ({b}, {H}) and ({b}, {H}, {nq})"
            )
        if not (np.isfinite(point).all() and np.isfinite(q).all()):
            raise ModelError(f"{onnx_path}: trial run on zeros gives NaN or inf")


# --- the server: current model, hot swap -----------------------------------------------------


def _signature(d: Path) -> tuple[int, ...] | None:
    """What changes when a model directory's files change (mtime and size of both files)."""
    try:
        a, b = os.stat(d / "meta.json"), os.stat(d / "model.onnx")
    except OSError:
        return None
    return (a.st_mtime_ns, a.st_size, b.st_mtime_ns, b.st_size)


def _version_key(d: Path) -> tuple[str, tuple[Any, ...]]:
    """Order versions by meta's ``created`` (ISO 8601 sorts as text), then by name, naturally."""
    try:
        created = str(json.loads((d / "meta.json").read_text()).get("created", ""))
    except (OSError, ValueError):
        created = ""
    parts = tuple((0, int(t)) if t.isdigit() else (1, t) for t in _split_digits(d.name))
    return created, parts


def _split_digits(s: str) -> list[str]:
    out, cur = [], ""
    for ch in s:
        if cur and ch.isdigit() != cur[-1].isdigit():
            out.append(cur)
            cur = ""
        cur += ch
    if cur:
        out.append(cur)
    return out


@dataclass
class SwapEvent:
    """What one poll did: ``kind`` is "loaded", "swapped" or "rejected"."""

    kind: str
    path: Path
    version: str
    old_version: str = ""
    reason: str = ""


class ModelServer:
    """The current good model of a source, hot-swapped when the source gets a new version.

    ``source`` is a model directory (``meta.json`` inside: re-loaded when its files change) or a
    registry directory whose sub-directories are versions (the newest one serves). A version that
    fails validation is logged once and remembered, so it is not retried every poll — until its
    files change (a copy that was still in progress, say).
    """

    def __init__(
        self,
        source: str | Path,
        features: Sequence[str] = FEATURES,
        providers: Sequence[str] = (CPU,),
        intra_op_threads: int = 1,
        spec: ServingSpec | None = None,
    ) -> None:
        self.source = Path(source)
        #: what a model must fit (``models.guardrails``); the first served model pins what it leaves open
        self.spec = spec or ServingSpec()
        self.features = tuple(features)
        # resolved once: a missing provider is reported once per process, not at every swap
        self.providers = resolve_providers(providers)
        self.skipped = unavailable_providers(providers)  # said once, in the serving line
        self.intra_op_threads = intra_op_threads
        self.current: LoadedModel | None = None
        self._current_sig: tuple[Path, tuple[int, ...] | None] | None = None
        self._rejected: dict[Path, tuple[int, ...] | None] = {}
        self.swaps = 0
        self.rejections = 0
        self.last_error = ""

    def _candidate(self) -> Path | None:
        """The directory that should be serving now, or None when the source holds no model."""
        if (self.source / "meta.json").exists():
            return self.source
        try:
            versions = [
                p for p in self.source.iterdir() if p.is_dir() and (p / "meta.json").exists()
            ]
        except OSError:
            return None
        good = [p for p in versions if self._rejected.get(p, ()) != _signature(p)]
        return max(good, key=_version_key) if good else None

    def poll(self) -> SwapEvent | None:
        """Look for a new version; load, validate and swap it in. Never raises for a bad model."""
        cand = self._candidate()
        if cand is None:
            if self.current is None and not self._rejected and self.last_error != "none":
                self.last_error = "none"
                log.error(
                    "inference: no model at %s (expected model.onnx + meta.json, or version "
                    "directories holding them); serving nothing",
                    self.source,
                )
            return None
        sig = (cand, _signature(cand))
        if sig == self._current_sig:
            return None
        if cand in self._rejected and self._rejected[cand] == sig[1]:
            return None
        try:
            model = load_model(cand, self.features, self.providers, self.intra_op_threads)
            self._check_fit(cand, model)
        except ModelError as exc:
            self._rejected[cand] = sig[1]
            self.rejections += 1
            self.last_error = str(exc)
            if self.current is None:
                log.error("inference: cannot serve %s: %s", cand, exc)
            else:
                log.error(
                    "inference: refusing the new model at %s: %s; still serving %s %s",
                    cand,
                    exc,
                    self.current.name,
                    self.current.version,
                )
            return SwapEvent("rejected", cand, _safe_version(cand), reason=str(exc))
        old = self.current
        self.current = model
        if old is None:
            self.spec = self.spec.pinned_by(model.meta)
        self._current_sig = sig
        self._rejected.pop(cand, None)
        self.last_error = ""
        if old is None:
            log.info(
                "inference: serving %s %s from %s (input %d x %d, horizon %d, providers %s%s)",
                model.name,
                model.version,
                cand,
                model.input_size,
                model.n_features,
                model.horizon,
                ",".join(model.providers),
                f"; {', '.join(self.skipped)}: not in this onnxruntime build"
                if self.skipped
                else "",
            )
            return SwapEvent("loaded", cand, model.version)
        self.swaps += 1
        log.warning(
            "inference: hot-swapped model %s %s -> %s %s",
            old.name,
            old.version,
            model.name,
            model.version,
        )
        return SwapEvent("swapped", cand, model.version, old_version=old.version)

    def _check_fit(self, cand: Path, model: LoadedModel) -> None:
        """``ModelError`` when the model does not fit the running configuration (with
        ``mismatch = "warn"``: a warning, and it serves)."""
        why = misfits(model.meta, self.spec)
        if not why:
            return
        text = f"{cand}: does not fit the running configuration: " + "; ".join(why)
        if self.spec.mismatch != "warn":
            raise ModelError(text + "; refusing to serve it")
        log.warning('inference: %s; serving it anyway ([inference] mismatch = "warn")', text)


def _safe_version(d: Path) -> str:
    try:
        return str(json.loads((d / "meta.json").read_text()).get("version", d.name))
    except (OSError, ValueError, AttributeError):
        return d.name
