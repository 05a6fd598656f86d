"""Training: Adam on windows, early stopping on a later validation block, seeded on CPU.

Reproducibility: the same data, configuration and seed give bit-identical weights on CPU, because
the seed fixes the initial weights (``torch.manual_seed``) and the shuffling (a private
``torch.Generator``), torch runs deterministic algorithms, and the thread count is fixed
(``threads``, default 1: the models are small and a fixed reduction order is what makes
float sums repeatable).

The loss lives in scaled target units (the scaler is fitted on the training windows only):
point loss (huber by default) + mean pinball loss over the quantiles.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from models.features import FEATURES
from models.nbeatsx import DEFAULTS as NBEATSX_DEFAULTS
from models.nbeatsx import NBEATSx
from models.net import Forecaster, pinball_loss, point_loss
from models.nhits import DEFAULTS as NHITS_DEFAULTS
from models.nhits import NHITS
from models.scaling import Scaler

ARCHITECTURES = {"nhits": NHITS, "nbeatsx": NBEATSx}
ARCH_DEFAULTS = {"nhits": NHITS_DEFAULTS, "nbeatsx": NBEATSX_DEFAULTS}


@dataclass
class TrainConfig:
    """Everything that decides a trained model (stored in meta.json as hyperparameters)."""

    architecture: str = "nhits"
    input_size: int = 32
    horizon: int = 4
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9)
    scaler: str = "robust"
    model: dict = field(default_factory=dict)  # architecture hyper-parameters (see DEFAULTS)
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    point_loss: str = "huber"
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}")
        if self.input_size < 2 or self.horizon < 1:
            raise ValueError("input_size must be >= 2 and horizon >= 1")
        qs = tuple(float(q) for q in self.quantiles)
        if not qs or any(not 0.0 < q < 1.0 for q in qs) or list(qs) != sorted(set(qs)):
            raise ValueError("quantiles must be increasing, distinct, strictly between 0 and 1")
        self.quantiles = qs
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.patience < 1:
            raise ValueError("epochs, batch_size, patience must be >= 1 and lr > 0")

    def to_dict(self) -> dict:
        """Every setting, the architecture's defaults included (``model`` is the effective
        block configuration, so meta.json does not depend on today's defaults)."""
        d = asdict(self)
        d["quantiles"] = list(self.quantiles)
        d["model"] = {**ARCH_DEFAULTS[self.architecture], **self.model}
        return d


@dataclass
class FitResult:
    """A trained model and how training went (losses in scaled units, best epoch restored)."""

    model: Forecaster
    scaler: Scaler
    train_loss: float
    val_loss: float
    epochs: int
    best_epoch: int
    history: list[tuple[float, float]]


def build_model(cfg: TrainConfig, scaler: Scaler) -> Forecaster:
    """A fresh (untrained) model for ``cfg`` with the given scaling baked in."""
    core = ARCHITECTURES[cfg.architecture](
        cfg.input_size, cfg.horizon, len(FEATURES), 1 + len(cfg.quantiles), **cfg.model
    )
    return Forecaster(core, scaler, cfg.quantiles)


def _loss(model: Forecaster, x: torch.Tensor, y: torch.Tensor, qs: torch.Tensor, kind: str):
    point, q = model.forward_scaled(x)
    ys = (y - model.center[0]) / model.scale[0]
    return point_loss(point, ys, kind) + pinball_loss(q, ys, qs)


@torch.no_grad()
def dataset_loss(model: Forecaster, x: np.ndarray, y: np.ndarray, kind: str, batch: int = 4096):
    """Mean loss over a whole set in eval mode (the train/validation gap is measured with it)."""
    model.eval()
    qs = torch.tensor(model.quantiles, dtype=torch.float32)
    total, n = 0.0, 0
    for i in range(0, len(x), batch):
        xb, yb = torch.from_numpy(x[i : i + batch]), torch.from_numpy(y[i : i + batch])
        total += float(_loss(model, xb, yb, qs, kind)) * len(xb)
        n += len(xb)
    return total / max(n, 1)


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    *,
    progress: bool = False,
    desc: str = "train",
) -> FitResult:
    """Train one model; early-stop on the validation loss and restore the best epoch."""
    if len(x_train) == 0 or len(x_val) == 0:
        raise ValueError("training and validation sets must not be empty")
    # Process-wide torch settings: set for the fit, restored after it (callers share torch).
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _fit(x_train, y_train, x_val, y_val, cfg, progress, desc)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    cfg: TrainConfig,
    progress: bool,
    desc: str,
) -> FitResult:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    scaler = Scaler.fit(x_train, cfg.scaler)
    model = build_model(cfg, scaler)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    qs = torch.tensor(cfg.quantiles, dtype=torch.float32)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
    history: list[tuple[float, float]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.epochs, desc=desc, unit="epoch", leave=False)
    stale = 0
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        run, seen = 0.0, 0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad()
            loss = _loss(model, xt[idx], yt[idx], qs, cfg.point_loss)
            loss.backward()
            opt.step()
            run += float(loss.detach()) * len(idx)
            seen += len(idx)
        val = dataset_loss(model, x_val, y_val, cfg.point_loss)
        history.append((run / seen, val))
        if val < best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
            stale = 0
        else:
            stale += 1
        if bar is not None:
            bar.set_postfix(train=f"{run / seen:.4f}", val=f"{val:.4f}", best=best[1])
            bar.update(1)
        if stale >= cfg.patience:
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best[2])
    model.eval()
    return FitResult(
        model=model,
        scaler=scaler,
        train_loss=dataset_loss(model, x_train, y_train, cfg.point_loss),
        val_loss=dataset_loss(model, x_val, y_val, cfg.point_loss),
        epochs=len(history),
        best_epoch=best[1],
        history=history,
    )


@torch.no_grad()
def predict(model: Forecaster, x: np.ndarray, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit point ``[m, H]`` and quantiles ``[m, H, Q]`` for raw windows ``x``."""
    model.eval()
    pts, qs = [], []
    for i in range(0, len(x), batch):
        p, q = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch], dtype=np.float32)))
        pts.append(p.numpy())
        qs.append(q.numpy())
    if not pts:
        raise ValueError("predict: no windows")
    return np.concatenate(pts), np.concatenate(qs)
