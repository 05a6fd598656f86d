"""Tiny contract-following ONNX models for the serving / infer tests, built without torch.

The graph is deliberately simple and exactly predictable: ``point[b, h] = w[h] * mean_t x[b, t, 0]
+ bias`` (the mean of the window's returns, scaled per step), ``quantiles[b, h, q] = point[b, h] +
offsets[q]``. Knobs produce the broken models the tests need (wrong feature count, frozen batch).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.features import FEATURES


def build_onnx(
    input_size: int = 8,
    n_features: int = len(FEATURES),
    horizon: int = 3,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    scale: float = 1.0,
    bias: float = 0.0,
    batch: str | int = "batch",
    band: float = 0.02,
) -> bytes:
    w = numpy_helper.from_array(np.full(horizon, scale, dtype=np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    offs = numpy_helper.from_array(
        np.array([(q - 0.5) * band for q in quantiles], dtype=np.float32), "offs"
    )
    starts = numpy_helper.from_array(np.array([0], dtype=np.int64), "starts")
    ends = numpy_helper.from_array(np.array([1], dtype=np.int64), "ends")
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    uaxes = numpy_helper.from_array(np.array([2], dtype=np.int64), "uaxes")
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["ret"]),  # [B, L, 1]
        helper.make_node("ReduceMean", ["ret"], ["m"], axes=[1], keepdims=0),  # [B, 1]
        helper.make_node("Mul", ["m", "w"], ["mw"]),  # [B, H]
        helper.make_node("Add", ["mw", "b"], ["point"]),
        helper.make_node("Unsqueeze", ["point", "uaxes"], ["p3"]),  # [B, H, 1]
        helper.make_node("Add", ["p3", "offs"], ["quantiles"]),  # [B, H, Q]
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, input_size, n_features])],
        [
            helper.make_tensor_value_info("point", TensorProto.FLOAT, [batch, horizon]),
            helper.make_tensor_value_info(
                "quantiles", TensorProto.FLOAT, [batch, horizon, len(quantiles)]
            ),
        ],
        [w, b, offs, starts, ends, axes, uaxes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def write_model(
    d: Path,
    version: str = "1",
    *,
    input_size: int = 8,
    horizon: int = 3,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    features: Sequence[str] = FEATURES,
    onnx_features: int | None = None,
    scale: float = 1.0,
    bias: float = 0.0,
    batch: str | int = "batch",
    band: float = 0.02,
    bar_seconds: float = 1,
    created: str | None = None,
) -> Path:
    """A model directory (model.onnx + meta.json) following the model contract."""
    d.mkdir(parents=True, exist_ok=True)
    blob = build_onnx(
        input_size, onnx_features or len(features), horizon, quantiles, scale, bias, batch, band
    )
    (d / "model.onnx").write_bytes(blob)
    meta = {
        "format": 1,
        "name": "tiny",
        "version": version,
        "architecture": "nhits",
        "features": list(features),
        "target": "ret",
        "input_size": input_size,
        "horizon": horizon,
        "quantiles": list(quantiles),
        "bar_seconds": bar_seconds,
        "scaler": {"kind": "standard", "in_graph": True},
        "hyperparameters": {},
        "training": {},
        "metrics": {},
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "created": created or dt.datetime.now(dt.UTC).isoformat(),
    }
    (d / "meta.json").write_text(json.dumps(meta))
    return d
