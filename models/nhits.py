"""NHITS (Challu et al., AAAI 2023) for multi-feature bar windows, with quantile outputs.

The paper's three ideas, as implemented here:

1. **Multi-rate input pooling.** Each stack looks at the window through a max-pool of its own
   kernel size (large kernels in the first stack, 1 in the last), so early stacks see the slow
   shape of the series and later stacks the fine detail, with far fewer MLP inputs.
2. **Hierarchical interpolation.** A block does not emit ``horizon`` values: it emits
   ``ceil(horizon / r)`` coefficients (``r`` = the stack's expressiveness ratio, large first) and
   linear interpolation stretches them to the horizon. Low-frequency stacks thus *cannot* produce
   high-frequency output; the backcast is interpolated the same way.
3. **Doubly residual stacking.** Each block subtracts its backcast from the target history the
   next block sees, and adds its forecast to the total.

Multi-variate input: the target (feature 0, ``ret``) is the residual stream; the exogenous
features (range, volume, time of day) are pooled with it and enter every block's MLP but are
never residualised. Several instruments are handled as a global model: their windows are rows of
the same batch. Every block forecasts ``1 + n_quantiles`` channels (point + quantile parameters,
see ``models.net.Forecaster``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.net import MLP, interpolation_matrix

DEFAULTS: dict = {
    "pool_sizes": [4, 2, 1],
    "downsample": [4, 2, 1],
    "blocks_per_stack": 1,
    "hidden": 64,
    "n_layers": 2,
    "dropout": 0.0,
}


class NHITSBlock(nn.Module):
    """Pool -> MLP -> (backcast knots, forecast knots) -> interpolate."""

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_features: int,
        n_outputs: int,
        pool: int,
        ratio: int,
        hidden: int,
        n_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.n_outputs = n_outputs
        self.pool = nn.MaxPool1d(kernel_size=pool, stride=pool, ceil_mode=True)
        pooled = math.ceil(input_size / pool)
        self.n_back = max(1, math.ceil(input_size / ratio))
        self.n_fore = max(1, math.ceil(horizon / ratio))
        self.mlp = MLP(pooled * n_features, hidden, n_layers, dropout)
        self.theta = nn.Linear(hidden, self.n_back + n_outputs * self.n_fore)
        self.register_buffer("w_back", interpolation_matrix(self.n_back, input_size))
        self.register_buffer("w_fore", interpolation_matrix(self.n_fore, horizon))

    def forward(self, resid: torch.Tensor, exog: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([resid.unsqueeze(-1), exog], dim=-1).transpose(1, 2)  # [B, F, L]
        h = self.mlp(self.pool(z).flatten(1))
        theta = self.theta(h)
        back = theta[:, : self.n_back] @ self.w_back  # [B, L]
        knots = theta[:, self.n_back :].reshape(-1, self.n_outputs, self.n_fore)
        fore = (knots @ self.w_fore).transpose(1, 2)  # [B, H, O]
        return back, fore


class NHITS(nn.Module):
    """Stacks of NHITS blocks; input scaled ``[B, L, F]``, output ``[B, H, n_outputs]``."""

    def __init__(
        self, input_size: int, horizon: int, n_features: int, n_outputs: int, **hp: object
    ) -> None:
        super().__init__()
        cfg = {**DEFAULTS, **hp}
        pools = [int(p) for p in cfg["pool_sizes"]]  # type: ignore[union-attr]
        ratios = [int(r) for r in cfg["downsample"]]  # type: ignore[union-attr]
        if len(pools) != len(ratios) or not pools:
            raise ValueError("nhits: pool_sizes and downsample need one entry per stack")
        if min(pools) < 1 or min(ratios) < 1:
            raise ValueError("nhits: pool sizes and downsample ratios must be >= 1")
        self.blocks = nn.ModuleList(
            NHITSBlock(
                input_size,
                horizon,
                n_features,
                n_outputs,
                min(p, input_size),
                r,
                int(cfg["hidden"]),
                int(cfg["n_layers"]),
                float(cfg["dropout"]),  # type: ignore[arg-type]
            )
            for p, r in zip(pools, ratios, strict=True)
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
