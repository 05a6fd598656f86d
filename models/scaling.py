"""Per-feature scaling statistics, fitted on training data only (numpy, no torch).

Why here and not in the caller: a model trained on scaled inputs and served on raw ones is the
classic silent failure. The statistics are fitted once on the training windows, stored in
meta.json for the record, and baked into the exported ONNX graph (``models/net.py``), so the
serving side only ever sees raw features and raw forecasts.

Two kinds:

- ``standard``: centre = mean, scale = standard deviation.
- ``robust``:   centre = median, scale = IQR / 1.349 (equals the std for normal data, but one
  flash crash does not squash every ordinary bar towards zero).

A feature with (near) zero spread — e.g. a constant volume column — gets scale 1, so it is
centred but never divided by ~0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("robust", "standard")
_MIN_SCALE = 1e-8
_IQR_TO_STD = 1.349


@dataclass(frozen=True)
class Scaler:
    """Centre and scale per feature: ``scaled = (x - center) / scale``."""

    kind: str
    center: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, x: np.ndarray, kind: str = "robust") -> Scaler:
        """Fit on rows of features (``[..., n_features]``; leading axes are flattened)."""
        if kind not in KINDS:
            raise ValueError(f"scaler kind must be one of {KINDS}, got {kind!r}")
        a = np.asarray(x, dtype=np.float64)
        a = a.reshape(-1, a.shape[-1])
        if a.shape[0] == 0:
            raise ValueError("cannot fit a scaler on no data")
        if kind == "standard":
            center = a.mean(axis=0)
            scale = a.std(axis=0)
        else:
            q25, center, q75 = np.percentile(a, [25.0, 50.0, 75.0], axis=0)
            scale = (q75 - q25) / _IQR_TO_STD
            # A heavily discrete feature (many zero returns) can have IQR 0 but real spread.
            fallback = a.std(axis=0)
            scale = np.where(scale > _MIN_SCALE, scale, fallback)
        scale = np.where(np.isfinite(scale) & (scale > _MIN_SCALE), scale, 1.0)
        center = np.where(np.isfinite(center), center, 0.0)
        return cls(kind, tuple(float(c) for c in center), tuple(float(s) for s in scale))

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scale raw features (last axis = features)."""
        return ((np.asarray(x, dtype=np.float64) - self.center) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        """The form stored in meta.json (``in_graph`` is always true for exported models)."""
        return {
            "kind": self.kind,
            "in_graph": True,
            "center": list(self.center),
            "scale": list(self.scale),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(str(d["kind"]), tuple(map(float, d["center"])), tuple(map(float, d["scale"])))
