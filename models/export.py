"""ONNX export with a truly dynamic batch dimension, checked, plus the model directory writer.

Why the checks: ``torch.onnx.export`` traces the module with one example input. Anything that
turns the batch size into a Python int during the trace (``len(x)``, ``int(x.shape[0])``) is
frozen into the graph as a constant, and the model then fails — or silently mis-shapes — at
any other batch size, even though the graph input is declared dynamic. So after exporting we

1. check that the input and both outputs carry a symbolic batch dimension, and
2. run the graph with onnxruntime at several batch sizes (including odd ones the trace never
   saw) and compare with PyTorch, raising :class:`ExportError` beyond ``atol``.

The exporter: torch 2.13 defaults to the dynamo exporter, which needs ``onnxscript`` (not a
dependency). The TorchScript exporter (``dynamo=False``) with ``dynamic_axes`` works offline and
is what we use; the models are written so that tracing is faithful (no data-dependent control
flow, batch kept symbolic with ``flatten``/``reshape(-1, ...)``).
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from models.features import FEATURES, TARGET
from models.net import Forecaster
from models.registry import FORMAT, file_sha256, now_iso, write_meta
from models.scaling import Scaler
from models.train import FitResult, TrainConfig, build_model

OPSET = 17
CHECK_BATCHES = (1, 8, 64, 333)


class ExportError(RuntimeError):
    """The exported graph does not behave like the PyTorch model."""


def random_inputs(model: Forecaster, batch: int, input_size: int, seed: int = 0) -> np.ndarray:
    """Plausible raw feature windows: centre + scale · N(0, 1) per feature."""
    rng = np.random.default_rng(seed + batch)
    c = model.center.numpy().astype(np.float64)
    s = model.scale.numpy().astype(np.float64)
    z = rng.standard_normal((batch, input_size, len(c)))
    return (c + s * z).astype(np.float32)


def _dynamic_batch_ok(onnx_bytes: bytes) -> list[str]:
    """Names of graph inputs/outputs whose first dimension is NOT symbolic."""
    import onnx

    m = onnx.load_from_string(onnx_bytes)
    bad = []
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            bad.append(v.name)
    return bad


def parity(
    model: Forecaster,
    onnx_path: str | Path,
    input_size: int,
    batches: tuple[int, ...] = CHECK_BATCHES,
) -> float:
    """Largest |onnxruntime - torch| over both outputs at the given batch sizes, in raw units
    or in units of the target's scale, whichever is larger: raw returns are ~1e-3, so a raw
    tolerance of 1e-4 alone would let a 10% error through."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    model.eval()
    for b in batches:
        x = random_inputs(model, b, input_size)
        with torch.no_grad():
            tp, tq = model(torch.from_numpy(x))
        try:
            op, oq = sess.run(["point", "quantiles"], {"x": x})
        except Exception as exc:  # onnxruntime raises its own types; all mean "broken graph"
            raise ExportError(f"batch {b}: onnxruntime failed: {exc}") from exc
        if op.shape != tuple(tp.shape) or oq.shape != tuple(tq.shape):
            raise ExportError(
                f"batch {b}: ONNX shapes {op.shape}, {oq.shape} != torch "
                f"{tuple(tp.shape)}, {tuple(tq.shape)}"
            )
        d = max(float(np.abs(op - tp.numpy()).max()), float(np.abs(oq - tq.numpy()).max()))
        worst = max(worst, d, d / float(model.scale[0]))
    return worst


def export_onnx(
    model: Forecaster, path: str | Path, input_size: int, *, atol: float = 1e-4
) -> float:
    """Write ``model`` to ``path`` as ONNX (input ``x``; outputs ``point``, ``quantiles``), verify
    the dynamic batch and the parity; return the largest difference seen."""
    model.eval()
    # Trace with batch 2, not 1: a batch of 1 invites broadcasting shortcuts that hide bugs.
    example = torch.from_numpy(random_inputs(model, 2, input_size))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            buf,
            input_names=["x"],
            output_names=["point", "quantiles"],
            dynamic_axes={"x": {0: "batch"}, "point": {0: "batch"}, "quantiles": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    data = buf.getvalue()
    bad = _dynamic_batch_ok(data)
    if bad:
        raise ExportError(f"batch dimension is not dynamic for {bad}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    tmp.write_bytes(data)
    try:
        worst = parity(model, tmp, input_size)
        if not worst <= atol:
            raise ExportError(f"onnxruntime differs from torch by {worst:.3g} (> {atol})")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return worst


def save_checkpoint(path: str | Path, cfg: TrainConfig, model: Forecaster) -> None:
    """Weights + config + scaler: what ``gekko export`` needs to rebuild and re-export."""
    scaler = Scaler(cfg.scaler, tuple(model.center.tolist()), tuple(model.scale.tolist()))
    torch.save(
        {"config": cfg.to_dict(), "scaler": scaler.to_dict(), "state_dict": model.state_dict()},
        str(path),
    )


def load_checkpoint(path: str | Path) -> tuple[TrainConfig, Forecaster]:
    ck = torch.load(str(path), weights_only=True)
    cfg_d = dict(ck["config"])
    cfg_d["quantiles"] = tuple(cfg_d["quantiles"])
    cfg = TrainConfig(**cfg_d)
    model = build_model(cfg, Scaler.from_dict(ck["scaler"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return cfg, model


def write_model_dir(
    out_dir: str | Path,
    *,
    name: str,
    version: str,
    cfg: TrainConfig,
    result: FitResult,
    bar_seconds: float,
    data: str,
    data_sha256: str,
    metrics: dict,
    command: str | None = None,
    checkpoint: bool = True,
    conformal: dict | None = None,
    feature_stats: dict | None = None,
    instruments: list[str] | None = None,
) -> dict:
    """Export the ONNX graph, optionally the torch checkpoint, and meta.json into ``out_dir``.

    ``conformal``: offsets serving adds to the quantiles (``models.conformal.Offsets.to_meta``).
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    worst = export_onnx(result.model, d / "model.onnx", cfg.input_size)
    if checkpoint:
        save_checkpoint(d / "model.pt", cfg, result.model)
    scaler = result.scaler.to_dict()
    meta = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "architecture": cfg.architecture,
        "features": list(FEATURES),
        "target": TARGET,
        "input_size": cfg.input_size,
        "horizon": cfg.horizon,
        "quantiles": list(cfg.quantiles),
        # whole seconds stay an integer; sub-second bars (0.2 s) must not be truncated to 0
        "bar_seconds": int(bar_seconds) if float(bar_seconds).is_integer() else float(bar_seconds),
        "scaler": scaler,
        "hyperparameters": cfg.to_dict(),
        "training": {
            "data": data,
            "data_sha256": data_sha256,
            "seed": cfg.seed,
            "command": command if command is not None else " ".join(sys.argv),
            "epochs": result.epochs,
            "best_epoch": result.best_epoch,
            "train_loss": result.train_loss,
            "val_loss": result.val_loss,
        },
        "metrics": metrics,
        # the training rows' distribution per feature: infer's input drift monitor compares
        # live rows with it (models/input_drift.py); absent in older metas (not monitored)
        **({"feature_stats": feature_stats} if feature_stats else {}),
        # the symbols it was trained on: infer refuses to forecast others (models/guardrails.py)
        **({"instruments": instruments} if instruments else {}),
        "export": {
            "opset": OPSET,
            "parity_max_abs_diff": worst,
            "parity_batches": list(CHECK_BATCHES),
        },
        "onnx_sha256": file_sha256(d / "model.onnx"),
        "created": now_iso(),
    }
    if conformal:
        meta["conformal"] = conformal
    write_meta(d, meta)
    return meta
