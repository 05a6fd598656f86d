"""Microstructure direction models as ONNX for serving: raw feature rows in, P(up) out.

The standardisation fitted on the training block is baked into the graph, so what serves it
feeds exactly what ``models.lob_features.step`` writes. The export is checked the way the bar
models' is (``models.export``): a symbolic batch dimension, and onnxruntime equal to the fitted
model at batch sizes the trace never saw. ``meta.json`` names the format, the feature list in
order, the tick and the expected move the cost rule needs; a loader refuses a model whose
features are not this engine's.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from models.lob_features import FEATURES
from models.lob_models import MLP, LinearLogit

FORMAT = "gekko-micro-1"
CHECK_BATCHES = (1, 7, 256)


class MicroModelError(RuntimeError):
    """A micro model that cannot be exported or served as it is."""


def _module(f: LinearLogit | MLP) -> Any:
    import torch

    mean = torch.tensor(f.scale.mean, dtype=torch.float32)
    std = torch.tensor(f.scale.std, dtype=torch.float32)
    if isinstance(f, LinearLogit):
        lin = torch.nn.Linear(len(FEATURES), 1)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(f.w[:-1], dtype=torch.float32)[None, :])
            lin.bias.copy_(torch.tensor([f.w[-1]], dtype=torch.float32))
        body = lin
    else:
        body = f.net

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.body = body

        def forward(self, x: Any) -> Any:
            return torch.sigmoid(self.body((x - self.mean) / self.std)).reshape(-1)

    return Classifier().eval()


def export_micro(
    f: LinearLogit | MLP, out_dir: str | Path, meta: dict[str, Any], atol: float = 1e-5
) -> Path:
    """Write ``model.onnx`` (input ``x`` [batch, features] float32, output ``p_up`` [batch])
    and ``meta.json`` to ``out_dir``; raises ``MicroModelError`` unless the graph matches."""
    import torch

    mod = _module(f)
    example = torch.zeros((2, len(FEATURES)), dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            mod,
            (example,),
            buf,
            input_names=["x"],
            output_names=["p_up"],
            dynamic_axes={"x": {0: "batch"}, "p_up": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    data = buf.getvalue()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(data)
    worst = _parity(f, out / "model.onnx")
    if not worst <= atol:
        (out / "model.onnx").unlink()
        raise MicroModelError(f"onnxruntime differs from the fitted model by {worst:.3g}")
    full = {
        "format": FORMAT,
        "features": list(FEATURES),
        "model": f.name,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "parity": worst,
        **meta,
    }
    (out / "meta.json").write_text(json.dumps(full, indent=2) + "\n")
    return out


def _parity(f: LinearLogit | MLP, path: Path) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    for b in CHECK_BATCHES:
        x = f.scale.mean + f.scale.std * rng.standard_normal((b, len(FEATURES)))
        want = f.predict(x)
        (got,) = sess.run(["p_up"], {"x": x.astype(np.float32)})
        if got.shape != (b,):
            raise MicroModelError(f"batch {b}: output shape {got.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def micro_version(meta: dict[str, Any]) -> str:
    """What serves, as forecasts, swaps and drift events name it:
    "micro:<stream>:<onnx sha256[:8]>" (never taken for a bar model's version)."""
    return f"micro:{meta.get('stream', '?')}:{str(meta.get('onnx_sha256', ''))[:8]}"


class MicroModel:
    """A served micro model: ``p_up(rows)`` for raw feature rows."""

    def __init__(self, model_dir: str | Path) -> None:
        import onnxruntime as ort

        d = Path(model_dir)
        try:
            self.meta = json.loads((d / "meta.json").read_text())
            data = (d / "model.onnx").read_bytes()
        except (OSError, json.JSONDecodeError) as exc:
            raise MicroModelError(f"{d}: {exc}") from None
        if self.meta.get("format") != FORMAT:
            raise MicroModelError(f"{d}: format {self.meta.get('format')!r}, not {FORMAT}")
        if self.meta.get("features") != list(FEATURES):
            raise MicroModelError(f"{d}: trained on other features than this engine computes")
        if hashlib.sha256(data).hexdigest() != self.meta.get("onnx_sha256"):
            raise MicroModelError(f"{d}: model.onnx does not match its meta.json hash")
        self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        self.path = d
        #: what serves, as forecasts and swaps name it: "micro:<stream>:<sha256[:8]>"
        self.version = micro_version(self.meta)

    def p_up(self, rows: np.ndarray) -> np.ndarray:
        (p,) = self.session.run(["p_up"], {"x": np.ascontiguousarray(rows, np.float32)})
        return p

    def trial(self) -> None:
        """One run at batch sizes 1 and 7 before it may serve: ``MicroModelError`` unless each
        gives that many probabilities (a frozen batch dimension, a NaN fails here, not live)."""
        for b in (1, 7):
            try:
                p = self.p_up(np.zeros((b, len(FEATURES))))
            except Exception as exc:  # onnxruntime's own errors: a reason, not a crash
                raise MicroModelError(
                    f"{self.path}: the trial run at batch {b} failed: {exc}"
                ) from None
            if p.shape != (b,) or not ((p >= 0) & (p <= 1)).all():
                raise MicroModelError(
                    f"{self.path}: at batch {b} the trial run gave {p!r}, not {b} probabilities"
                )
