"""Who predicts the direction of the next mid-price change: the baselines and our classifiers.

Every forecaster here maps feature rows (``models.lob_features``) to P(next change is up). The
baselines are the ones the literature measures against: a coin, the sign of the last move
(its hit rate fitted on the training block) and a logistic regression on the touch imbalance.
Ours are a logistic regression on every feature and a small MLP (PyTorch, seeded; the train
extra), both fitted on the training block only. Logistic fits are Newton steps with a light L2
penalty, in numpy: no extra dependency for a convex problem this small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.lob_features import FEATURES

_IMB = FEATURES.index("imbalance_1")
_LAST = FEATURES.index("last_mid_move")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, iters: int = 50) -> np.ndarray:
    """Weights (bias last) of a logistic regression of ``y`` (0/1) on ``x``: Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    n = len(y)
    for _ in range(iters):
        p = _sigmoid(xb @ w)
        grad = xb.T @ (p - y) / n + l2 * w
        h = (xb * (p * (1 - p))[:, None]).T @ xb / n + l2 * np.eye(len(w))
        dw = np.linalg.solve(h, grad)
        w -= dw
        if np.max(np.abs(dw)) < 1e-10:
            break
    return w


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        sd = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(sd > 1e-12, sd, 1.0))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class Coin:
    name = "coin (0.5)"

    def fit(self, x: np.ndarray, y: np.ndarray) -> Coin:
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), 0.5)


class LastMove:
    """The next change repeats (or reverses) the last one, as often as it did in training."""

    name = "last-move sign"

    def fit(self, x: np.ndarray, y: np.ndarray) -> LastMove:
        last = x[:, _LAST]
        moved = last != 0
        same = (np.sign(last[moved]) > 0) == (y[moved] > 0)
        self.p_same = float(np.clip(same.mean() if moved.any() else 0.5, 0.01, 0.99))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        last = x[:, _LAST]
        return np.where(last > 0, self.p_same, np.where(last < 0, 1 - self.p_same, 0.5))


class ImbalanceLogit:
    """The standard baseline: P(up) from the touch imbalance alone."""

    name = "imbalance logit"

    def fit(self, x: np.ndarray, y: np.ndarray) -> ImbalanceLogit:
        self.w = fit_logistic(x[:, [_IMB]], y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(x[:, _IMB] * self.w[0] + self.w[1])


class LinearLogit:
    """A logistic regression on every feature (standardised on the training block)."""

    name = "logit (all features)"

    def fit(self, x: np.ndarray, y: np.ndarray) -> LinearLogit:
        self.scale = Standardizer.fit(x)
        self.w = fit_logistic(self.scale(x), y, l2=1e-3)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self.scale(x) @ self.w[:-1] + self.w[-1])


class MLP:
    """Two hidden layers, trained with Adam on log loss, early-stopped on a validation block
    (the last ``val_frac`` of the training rows: later in time)."""

    def __init__(self, seed: int = 0, hidden: int = 32, epochs: int = 30, val_frac: float = 0.15):
        self.seed, self.hidden, self.epochs, self.val_frac = seed, hidden, epochs, val_frac
        self.name = f"mlp (seed {seed})"

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLP:
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.scale = Standardizer.fit(x)
        xs = self.scale(x).astype(np.float32)
        cut = int(len(xs) * (1 - self.val_frac))
        xt, yt = torch.from_numpy(xs[:cut]), torch.from_numpy(y[:cut].astype(np.float32))
        xv, yv = torch.from_numpy(xs[cut:]), torch.from_numpy(y[cut:].astype(np.float32))
        net = torch.nn.Sequential(
            torch.nn.Linear(xs.shape[1], self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, self.hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(self.hidden, 1),
        )
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        best, best_state, patience = float("inf"), None, 0
        for _ in range(self.epochs):
            net.train()
            order = rng.permutation(len(xt))  # shuffled within the training block only
            for k in range(0, len(order), 512):
                idx = torch.from_numpy(order[k : k + 512])
                opt.zero_grad()
                loss_fn(net(xt[idx]).squeeze(1), yt[idx]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                v = float(loss_fn(net(xv).squeeze(1), yv))
            if v < best - 1e-5:
                best, patience = v, 0
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
            else:
                patience += 1
                if patience >= 4:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.net = net
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            z = self.net(torch.from_numpy(self.scale(x).astype(np.float32))).squeeze(1)
        return _sigmoid(z.numpy().astype(np.float64))


def baselines() -> list[Any]:
    return [Coin(), LastMove(), ImbalanceLogit()]


def fit_softmax(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-3, iters: int = 30):
    """Weights [d + 1, k] of a multinomial logistic regression of class ``y`` (0..k-1) on
    ``x``: Newton's method on the full Hessian (small d and k)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    n, d = xb.shape
    w = np.zeros((d, k))
    onehot = np.eye(k)[y]
    for _ in range(iters):
        p = _softmax(xb @ w)
        grad = (xb.T @ (p - onehot) / n + l2 * w).ravel(order="F")
        h = np.empty((d * k, d * k))
        for a in range(k):
            for b in range(k):
                wgt = p[:, a] * ((a == b) - p[:, b])
                h[a * d : (a + 1) * d, b * d : (b + 1) * d] = (xb * wgt[:, None]).T @ xb / n
        h += l2 * np.eye(d * k)
        step = np.linalg.lstsq(h, grad, rcond=None)[0]
        w -= step.reshape((d, k), order="F")
        if np.max(np.abs(step)) < 1e-9:
            break
    return w


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class NoChange:
    """Always "no change"; its probabilities the training block's class shares."""

    name = "always no change"

    def fit(self, x: np.ndarray, y: np.ndarray) -> NoChange:
        self.p = np.bincount(y, minlength=3) / len(y)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.tile(self.p, (len(x), 1))


class Softmax:
    """Down / flat / up from the touch imbalance alone (``imbalance_only``) or every feature."""

    def __init__(self, imbalance_only: bool) -> None:
        self.cols = [_IMB] if imbalance_only else list(range(len(FEATURES)))
        self.name = "imbalance softmax" if imbalance_only else "softmax (all features)"

    def fit(self, x: np.ndarray, y: np.ndarray) -> Softmax:
        self.scale = Standardizer.fit(x[:, self.cols])
        self.w = fit_softmax(self.scale(x[:, self.cols]), y, 3)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        xs = self.scale(x[:, self.cols])
        return _softmax(xs @ self.w[:-1] + self.w[-1])
