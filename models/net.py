"""Torch pieces shared by NHITS and NBEATSx: the MLP, the scaling wrapper and the losses.

Imported only by training and export code (torch is an optional extra; the runtime serves the
exported ONNX graph with onnxruntime alone).

The wrapper, :class:`Forecaster`, is the exact module that gets exported. Its contract:

- input ``x``: ``[batch, input_size, n_features]`` float32 RAW features (``models.features``);
- it scales them with the training statistics (buffers, so they are constants of the graph);
- the core network (NHITS or NBEATSx) returns ``[batch, horizon, 1 + n_quantiles]`` in scaled
  target units: channel 0 is the point forecast, channels 1.. parametrise the quantiles;
- quantiles are made monotone by construction (first one free, then cumulative softplus
  increments), so a strategy never sees a 10% quantile above the 90% one;
- both outputs are unscaled back to raw ``ret`` units.

Every operation keeps the batch dimension symbolic (``flatten``/``reshape(-1, ...)``, no
``len()`` or ``.shape[0]``) so the ONNX graph has a truly dynamic batch; ``models.export``
checks it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.scaling import Scaler


class MLP(nn.Sequential):
    """``n_layers`` fully connected ReLU layers of width ``hidden`` (the block body of both papers)."""

    def __init__(self, n_in: int, hidden: int, n_layers: int, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(n_layers):
            layers.append(nn.Linear(width, hidden))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        super().__init__(*layers)


def interpolation_matrix(n_knots: int, n_out: int) -> torch.Tensor:
    """``[n_knots, n_out]`` weights of linear interpolation from ``n_knots`` evenly spaced
    coefficients to ``n_out`` points (ends aligned). A fixed matmul instead of
    ``F.interpolate``: exact, cheap, and trivially exportable with any batch size."""
    w = np.zeros((n_knots, n_out), dtype=np.float32)
    if n_knots == 1:
        w[0, :] = 1.0
        return torch.from_numpy(w)
    for j in range(n_out):
        pos = j * (n_knots - 1) / max(n_out - 1, 1)
        lo = min(int(math.floor(pos)), n_knots - 2)
        frac = pos - lo
        w[lo, j] += 1.0 - frac
        w[lo + 1, j] += frac
    return torch.from_numpy(w)


class Forecaster(nn.Module):
    """Raw features in, raw-unit point forecast and monotone quantiles out (see module doc)."""

    def __init__(self, core: nn.Module, scaler: Scaler, quantiles: tuple[float, ...]) -> None:
        super().__init__()
        self.core = core
        self.quantiles = tuple(float(q) for q in quantiles)
        self.register_buffer("center", torch.tensor(scaler.center, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scaler.scale, dtype=torch.float32))

    def forward_scaled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Point ``[B, H]`` and quantiles ``[B, H, Q]`` in SCALED target units (the loss space)."""
        xs = (x - self.center) / self.scale
        out = self.core(xs)  # [B, H, 1 + Q]
        point = out[:, :, 0]
        raw = out[:, :, 1:]
        if raw.size(-1) > 1:
            steps = torch.cat([raw[:, :, :1], nn.functional.softplus(raw[:, :, 1:])], dim=-1)
            q = torch.cumsum(steps, dim=-1)
        else:
            q = raw
        return point, q

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        point, q = self.forward_scaled(x)
        s = self.scale[0]
        c = self.center[0]
        return point * s + c, q * s + c


def pinball_loss(q_pred: torch.Tensor, y: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss; ``q_pred [B, H, Q]``, ``y [B, H]``, ``quantiles [Q]``."""
    diff = y.unsqueeze(-1) - q_pred
    return torch.maximum(quantiles * diff, (quantiles - 1.0) * diff).mean()


def point_loss(pred: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss of the point forecast: ``mse`` (mean), ``mae`` (median) or ``huber`` (delta 1, in
    scaled units: mean-like for ordinary bars, median-like for the fat tails of returns)."""
    if kind == "mse":
        return nn.functional.mse_loss(pred, y)
    if kind == "mae":
        return nn.functional.l1_loss(pred, y)
    if kind == "huber":
        return nn.functional.huber_loss(pred, y, delta=1.0)
    raise ValueError(f"unknown point loss {kind!r} (mse | mae | huber)")
