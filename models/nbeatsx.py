"""NBEATSx (Olivares et al., IJF 2023): N-BEATS blocks with exogenous covariates, plus quantiles.

Three block types, each an MLP that emits expansion coefficients ``theta`` for a basis:

- ``trend``: polynomial basis of degree ``trend_degree`` (slowly varying drift);
- ``seasonality``: Fourier basis with ``harmonics`` harmonics of the window length (cycles);
- ``identity`` (the paper's "generic"): the coefficients are the values themselves.

Backcast and forecast bases share one time axis (the window is t in [0, 1), the horizon continues
it past 1), so a trend or a cycle fitted on the history is *extrapolated* into the forecast,
which is what makes the first two block types interpretable.

Exogenous covariates (range, volume, time of day: every feature but the target) enter EVERY
block: the block's MLP sees the target residual concatenated with the flattened covariate
history. Stacks are doubly residual as in N-BEATS: each block removes its backcast from the
target stream and adds its forecast to the total. Every block forecasts ``1 + n_quantiles``
channels (point + quantile parameters, see ``models.net.Forecaster``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.net import MLP

BLOCK_TYPES = ("trend", "seasonality", "identity")
DEFAULTS: dict = {
    "stacks": ["trend", "seasonality", "identity"],
    "blocks_per_stack": 1,
    "hidden": 64,
    "n_layers": 2,
    "dropout": 0.0,
    "trend_degree": 2,
    "harmonics": 3,
}


def _basis(kind: str, t: np.ndarray, degree: int, harmonics: int) -> torch.Tensor:
    """Rows of a basis evaluated at times ``t`` (``[n_basis, len(t)]``)."""
    if kind == "trend":
        rows = [t**p for p in range(degree + 1)]
    else:
        rows = [np.ones_like(t)]
        for k in range(1, harmonics + 1):
            rows.append(np.cos(2.0 * np.pi * k * t))
            rows.append(np.sin(2.0 * np.pi * k * t))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


class NBEATSxBlock(nn.Module):
    """One block: MLP over (target residual, covariates) -> theta -> basis expansion."""

    def __init__(
        self,
        kind: str,
        input_size: int,
        horizon: int,
        n_features: int,
        n_outputs: int,
        hidden: int,
        n_layers: int,
        dropout: float,
        degree: int,
        harmonics: int,
    ) -> None:
        super().__init__()
        if kind not in BLOCK_TYPES:
            raise ValueError(f"nbeatsx: block type must be one of {BLOCK_TYPES}, got {kind!r}")
        self.kind = kind
        self.n_outputs = n_outputs
        self.horizon = horizon
        self.mlp = MLP(input_size * n_features, hidden, n_layers, dropout)
        if kind == "identity":
            self.n_back, self.n_fore = input_size, horizon
        else:
            t_back = np.arange(input_size, dtype=np.float64) / input_size
            t_fore = (input_size + np.arange(horizon, dtype=np.float64)) / input_size
            self.register_buffer("b_back", _basis(kind, t_back, degree, harmonics))
            self.register_buffer("b_fore", _basis(kind, t_fore, degree, harmonics))
            self.n_back = self.n_fore = int(self.b_back.shape[0])
        self.theta = nn.Linear(hidden, self.n_back + n_outputs * self.n_fore)

    def forward(self, resid: torch.Tensor, exog: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(torch.cat([resid, exog.flatten(1)], dim=1))
        theta = self.theta(h)
        tb = theta[:, : self.n_back]
        tf = theta[:, self.n_back :].reshape(-1, self.n_outputs, self.n_fore)
        if self.kind == "identity":
            return tb, tf.transpose(1, 2)
        return tb @ self.b_back, (tf @ self.b_fore).transpose(1, 2)


class NBEATSx(nn.Module):
    """Stacks of NBEATSx blocks; input scaled ``[B, L, F]``, output ``[B, H, n_outputs]``."""

    def __init__(
        self, input_size: int, horizon: int, n_features: int, n_outputs: int, **hp: object
    ) -> None:
        super().__init__()
        cfg = {**DEFAULTS, **hp}
        stacks = [str(s) for s in cfg["stacks"]]  # type: ignore[union-attr]
        if not stacks:
            raise ValueError("nbeatsx: at least one stack")
        self.blocks = nn.ModuleList(
            NBEATSxBlock(
                kind,
                input_size,
                horizon,
                n_features,
                n_outputs,
                int(cfg["hidden"]),  # type: ignore[arg-type]
                int(cfg["n_layers"]),
                float(cfg["dropout"]),
                int(cfg["trend_degree"]),  # type: ignore[arg-type]
                int(cfg["harmonics"]),  # type: ignore[arg-type]
            )
            for kind in stacks
            for _ in range(int(cfg["blocks_per_stack"]))  # type: ignore[call-overload]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        resid = x[:, :, 0]
        exog = x[:, :, 1:]
        total = None
        for block in self.blocks:
            back, fore = block(resid, exog)
            resid = resid - back
            total = fore if total is None else total + fore
        assert total is not None
        return total
