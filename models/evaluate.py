"""Walk-forward evaluation against baselines: MAE, MASE, sMAPE, directional accuracy with its CI.

What each number means (docs/forecasting.md shows the tables and points here):

- MAE: mean absolute error of the forecast log returns, over every horizon step.
- MASE: absolute errors divided by the in-sample MAE of the random-walk forecast (mean |ret| on
  the fold's TRAINING part of the same series), averaged. 1.0 = as good as the random walk on
  the data it was fitted on; below 1 = better.
- sMAPE: on the implied PRICE path (P_t·exp(cumsum forecast) against P_t·exp(cumsum actual)),
  in percent. On returns it would be meaningless (the random walk's forecast 0 scores 200%
  whatever happens).
- Directional accuracy: share of one-step-ahead forecasts whose sign matches the realised
  return, counting only bars where both are non-zero, with a 95% Wilson interval. A forecaster
  that never calls a direction (the random walk) has none.

Probabilistic scores (pinball, CRPS, coverage, DM tests against each baseline, several seeds):
models/probabilistic.py, models/prob_eval.py; quantile baselines: models/prob_baselines.py;
conformal calibration of the model's bands, fitted on each fold's validation block and scored
on its test block: models/conformal.py.

Baselines, all computed from the same windows: random walk (forecast return 0), drift naive
(the mean return of the history up to the forecast origin), seasonal naive
(the return one season earlier; season = bars per day for intraday data spanning two days or
more, 5 for daily bars, else 1), moving average (mean return of the input window, flat over
the horizon), train mean (the mean return of the training data: the "always up" call on a
rising market, which directional accuracy must beat to mean anything).

Overfitting: every fold reports the model's loss on its training and validation sets; the gap
(validation / train - 1) is printed, and a large one is flagged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.conformal import ACI_GAMMA, adaptive, calibrated, fit_split
from models.data import Bars, Fold, make_windows, walk_forward
from models.features import TARGET_INDEX
from models.prob_baselines import drift_point, quantile_baselines

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
#: extra baselines (statsforecast's): (ret, first_target, train_end, horizon, levels, key) ->
#: (point forecasts, quantile forecasts) by name; ``key`` names the block for memoising
ExtraBaselines = Callable[..., tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
Z95 = 1.959963984540054


@dataclass
class Metrics:
    """One forecaster's scores on the pooled test windows."""

    name: str
    mae: float
    mase: float
    smape: float
    dir_acc: float | None
    ci_low: float | None
    ci_high: float | None
    n_dir: int
    n: int
    rmse: float = math.nan

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FoldGap:
    """Train vs validation loss of one fold's model (scaled units)."""

    fold: int
    train_loss: float
    val_loss: float
    epochs: int

    @property
    def gap(self) -> float:
        return self.val_loss / self.train_loss - 1.0 if self.train_loss > 0 else float("nan")


@dataclass
class EvalReport:
    """Everything ``gekko eval`` prints and ``meta.json`` stores under ``metrics``."""

    data: str
    architecture: str
    folds: int
    horizon: int
    input_size: int
    season: int
    rows: list[Metrics]
    gaps: list[FoldGap] = field(default_factory=list)
    coverage: float | None = None  # share of actual returns inside the outer quantiles
    nominal: float | None = None  # what that share should be (q_last - q_first)
    levels: list[float] = field(default_factory=list)
    prob: list = field(default_factory=list)  # models.probabilistic.ProbScore per forecaster
    dm: list = field(default_factory=list)  # models.prob_eval.DMRow per baseline and loss
    seed: int | None = None
    notes: list[str] = field(default_factory=list)  # what was skipped, and why

    def to_dict(self) -> dict:
        return {
            "data": self.data,
            "architecture": self.architecture,
            "folds": self.folds,
            "horizon": self.horizon,
            "input_size": self.input_size,
            "season": self.season,
            "table": [r.to_dict() for r in self.rows],
            "train_val_gap": [
                {
                    "fold": g.fold,
                    "train_loss": g.train_loss,
                    "val_loss": g.val_loss,
                    "gap": g.gap,
                    "epochs": g.epochs,
                }
                for g in self.gaps
            ],
            "quantile_coverage": self.coverage,
            "quantile_nominal": self.nominal,
            "levels": list(self.levels),
            "probabilistic": [p.to_dict() for p in self.prob],
            "dm": [d.to_dict() for d in self.dm],
            "seed": self.seed,
            "notes": list(self.notes),
        }


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sane at small n and near 0/1, unlike p ± z·se)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    den = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (mid - half, mid + half)


def default_season(bar_seconds: float, n_bars: int = 0) -> int:
    """Bars per day for intraday bars when the data spans at least two days; a business week
    (5) for daily or slower bars; otherwise 1 (the previous bar's return: persistence)."""
    if 0 < bar_seconds < 86_400:
        per_day = max(1, int(86_400 / bar_seconds + 1e-9))  # 86_400 // 0.2 is 431_999.0
        return per_day if n_bars >= 2 * per_day else 1
    return 5 if bar_seconds >= 86_400 else 1


def score(name: str, pred: np.ndarray, y: np.ndarray, scale: np.ndarray) -> Metrics:
    """Metrics of point forecasts ``pred [m, H]`` against ``y [m, H]``; ``scale [m]`` is the
    MASE denominator of each window's series."""
    err = np.abs(pred.astype(np.float64) - y)
    p_hat = np.exp(np.cumsum(pred, axis=1, dtype=np.float64))
    p_act = np.exp(np.cumsum(y, axis=1, dtype=np.float64))
    smape = 200.0 * np.mean(np.abs(p_hat - p_act) / (np.abs(p_hat) + np.abs(p_act)))
    s1, a1 = np.sign(pred[:, 0]), np.sign(y[:, 0])
    called = (s1 != 0) & (a1 != 0)
    n_dir = int(called.sum())
    hits = int((s1[called] == a1[called]).sum())
    lo, hi = wilson(hits, n_dir)
    return Metrics(
        name=name,
        mae=float(err.mean()),
        rmse=float(np.sqrt(np.mean(err * err))),
        mase=float((err / scale[:, None]).mean()),
        smape=float(smape),
        dir_acc=hits / n_dir if n_dir else None,
        ci_low=lo if n_dir else None,
        ci_high=hi if n_dir else None,
        n_dir=n_dir,
        n=int(y.shape[0]),
    )


def baseline_forecasts(
    x: np.ndarray,
    ret: np.ndarray,
    first_target: np.ndarray,
    horizon: int,
    season: int,
    drift: float = 0.0,
) -> dict[str, np.ndarray]:
    """Random walk, drift naive, seasonal naive, moving average and train mean for windows
    ``x`` of one series.

    ``ret`` is the series' full return column and ``first_target[i]`` the index in it of window
    i's first target, so the seasonal naive may look further back than the input window.
    ``drift`` is the mean return of the training data: a forecaster that always says "up" on a
    rising index scores well on direction without knowing anything about tomorrow, and this
    row shows how much of a model's directional accuracy is just that.
    """
    m = x.shape[0]
    h = np.arange(horizon)
    back = season * ((h // season) + 1)  # always lands on a bar before the first target
    idx = first_target[:, None] + h[None, :] - back[None, :]
    seasonal = np.where(idx >= 0, ret[np.clip(idx, 0, None)], 0.0)
    ma = np.repeat(x[:, :, TARGET_INDEX].mean(axis=1, keepdims=True), horizon, axis=1)
    return {
        "random walk": np.zeros((m, horizon), np.float32),
        "drift naive": drift_point(ret, first_target, horizon).astype(np.float32),
        "seasonal naive": seasonal.astype(np.float32),
        "moving average": ma.astype(np.float32),
        "train mean": np.full((m, horizon), drift, np.float32),
    }


@dataclass
class _Series:
    feats: np.ndarray
    x: np.ndarray
    y: np.ndarray
    folds: list[Fold]


def _prepare(
    series: Sequence[Bars], input_size: int, horizon: int, folds: int, test_frac: float
) -> list[_Series]:
    out = []
    for b in series:
        feats = b.features()
        x, y = make_windows(feats, input_size, horizon)
        if len(x) == 0:
            continue
        out.append(_Series(feats, x, y, walk_forward(len(x), folds, horizon, test_frac=test_frac)))
    if not out:
        raise ValueError(f"no series is long enough for windows of {input_size}+{horizon} bars")
    return out


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass
class _Collect:
    """Forecasts gathered block by block, by forecaster, in one pooled time order."""

    points: dict[str, list[np.ndarray]] = field(default_factory=dict)
    quants: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ys: list[np.ndarray] = field(default_factory=list)
    scales: list[np.ndarray] = field(default_factory=list)

    def add_baselines(
        self,
        feats: np.ndarray,
        xt: np.ndarray,
        first: np.ndarray,
        train_end: int,
        horizon: int,
        season: int,
        levels: Sequence[float],
        extra: ExtraBaselines | None,
        key: tuple,
    ) -> None:
        """Every baseline's forecasts for one test block, and its outcomes' MASE scale.

        ``train_end``: the bars before it are the block's training data (drift, climatology).
        """
        ret = feats[:, TARGET_INDEX]
        train_ret = feats[:train_end, TARGET_INDEX]
        drift = float(train_ret[1:].mean()) if len(train_ret) > 1 else 0.0
        for name, f in baseline_forecasts(xt, ret, first, horizon, season, drift).items():
            self.points.setdefault(name, []).append(f)
        for name, q in quantile_baselines(ret, first, train_end, horizon, levels).items():
            self.quants.setdefault(name, []).append(q)
        if extra is not None:
            pts, qs = extra(ret, first, train_end, horizon, levels, key)
            for name, f in pts.items():
                self.points.setdefault(name, []).append(f)
            for name, q in qs.items():
                self.quants.setdefault(name, []).append(q)
        self.scales.append(np.full(len(xt), max(float(np.mean(np.abs(train_ret))), 1e-12)))

    def report(self, model: str, levels: Sequence[float], **kw) -> EvalReport:
        """Pool the blocks and score every forecaster (point table, probabilistic, DM)."""
        from models.prob_eval import dm_missing, dm_rows, prob_rows

        y, scale = _cat(self.ys), _cat(self.scales)
        points = {n: _cat(p) for n, p in self.points.items()}
        quants = {n: _cat(q) for n, q in self.quants.items()}
        mq = quants[model]
        no_dm = dm_missing()
        multi = len(levels) > 1
        return EvalReport(
            **kw,
            rows=[score(n, p, y, scale) for n, p in points.items()],
            coverage=float(((y >= mq[..., 0]) & (y <= mq[..., -1])).mean()) if multi else None,
            nominal=float(levels[-1] - levels[0]) if multi else None,
            levels=[float(t) for t in levels],
            prob=prob_rows(quants, y, levels),
            dm=[] if no_dm else dm_rows(model, points, quants, y, levels),
            notes=[no_dm] if no_dm else [],
        )


def walk_forward_eval(
    series: Sequence[Bars],
    cfg: object,
    *,
    folds: int = 3,
    season: int | None = None,
    test_frac: float = 0.4,
    data_name: str = "",
    progress: bool = False,
    fit_fn: Callable | None = None,
    extra: ExtraBaselines | None = None,
    aci_gamma: float = ACI_GAMMA,
) -> EvalReport:
    """Retrain the model of ``cfg`` (a ``models.train.TrainConfig``) on each fold's past, score it
    and the baselines on the fold's test block; metrics are pooled over all test windows.

    The model's bands are also scored after conformal calibration: split offsets fitted on the
    fold's validation block (the model never trained on it; it only chose the epoch), and
    adaptive conformal seeded with the same residuals, both judged on the later test block.
    """
    from models.train import fit, predict  # torch only here: baselines alone need none

    fit = fit_fn or fit
    L, H = cfg.input_size, cfg.horizon  # type: ignore[attr-defined]
    arch, qs = cfg.architecture, cfg.quantiles  # type: ignore[attr-defined]
    prepared = _prepare(series, L, H, folds, test_frac)
    season = season or default_season(series[0].bar_seconds(), len(series[0]))
    c = _Collect()
    gaps = []
    for k in range(folds):

        def sl(s: _Series, part: str, k: int = k) -> slice:
            a, b = getattr(s.folds[k], part)
            return slice(a, b)

        xtr = _cat([s.x[sl(s, "train")] for s in prepared])
        ytr = _cat([s.y[sl(s, "train")] for s in prepared])
        xva = _cat([s.x[sl(s, "val")] for s in prepared])
        yva = _cat([s.y[sl(s, "val")] for s in prepared])
        res = fit(xtr, ytr, xva, yva, cfg, progress=progress, desc=f"fold {k + 1}/{folds}")
        gaps.append(FoldGap(k + 1, res.train_loss, res.val_loss, res.epochs))
        q_val = predict(res.model, xva)[1]
        off = fit_split(yva, q_val, qs, source=f"fold {k + 1} validation block")
        resid = yva.astype(np.float64)[..., None] - q_val
        for i, s in enumerate(prepared):
            t = sl(s, "test")
            if t.stop <= t.start:
                continue
            xt, yt = s.x[t], s.y[t]
            point, q = predict(res.model, xt)
            c.points.setdefault(arch, []).append(point)
            c.quants.setdefault(arch, []).append(q)
            c.quants.setdefault(f"{arch} + split conformal", []).append(calibrated(q, off))
            aci = adaptive(yt, q, qs, resid, gamma=aci_gamma)
            c.quants.setdefault(f"{arch} + adaptive conformal", []).append(aci)
            first = np.arange(t.start, t.stop) + L
            train_end = s.folds[k].train[1] + L
            c.add_baselines(s.feats, xt, first, train_end, H, season, qs, extra, (i, k))
            c.ys.append(yt)
    return c.report(
        arch,
        qs,
        data=data_name,
        architecture=arch,
        folds=folds,
        horizon=H,
        input_size=L,
        season=season,
        gaps=gaps,
        seed=getattr(cfg, "seed", None),
    )


def evaluate_predictor(
    predictor: Predictor,
    series: Sequence[Bars],
    input_size: int,
    horizon: int,
    quantiles: Sequence[float],
    *,
    name: str = "model",
    season: int | None = None,
    test_frac: float = 0.4,
    data_name: str = "",
    offsets: np.ndarray | None = None,
    extra: ExtraBaselines | None = None,
    residuals: np.ndarray | None = None,
    aci_gamma: float = ACI_GAMMA,
) -> EvalReport:
    """Score an already trained model (e.g. an ONNX session) on the last ``test_frac`` of each
    series, with the same baselines; MASE scale from the part before it. ``offsets`` (the
    model's stored conformal offsets) add a row for the calibrated bands it would serve;
    ``residuals`` (its stored calibration residuals) one for the bands adaptive serving
    (``[inference] conformal = "adaptive"``) would give, each series starting from them."""
    from models.conformal import shift

    season = season or default_season(series[0].bar_seconds(), len(series[0]))
    c = _Collect()
    for i, b in enumerate(series):
        feats = b.features()
        x, y = make_windows(feats, input_size, horizon)
        start = len(x) - int(len(x) * test_frac)
        if len(x) == 0 or start >= len(x):
            continue
        xt, yt = x[start:], y[start:]
        point, q = predictor(xt)
        c.points.setdefault(name, []).append(point)
        c.quants.setdefault(name, []).append(q)
        if offsets is not None:
            qc = shift(np.array(q, dtype=np.float64), offsets)
            c.quants.setdefault(f"{name} + stored conformal", []).append(qc)
        if residuals is not None:
            qa = adaptive(yt, np.asarray(q, dtype=np.float64), quantiles, residuals, aci_gamma)
            c.quants.setdefault(f"{name} + stored adaptive conformal", []).append(qa)
        first = np.arange(start, len(x)) + input_size
        c.add_baselines(
            feats, xt, first, start + input_size, horizon, season, quantiles, extra, (i, 0)
        )
        c.ys.append(yt)
    if not c.ys:
        raise ValueError("no series is long enough to evaluate")
    return c.report(
        name,
        quantiles,
        data=data_name,
        architecture=name,
        folds=0,
        horizon=horizon,
        input_size=input_size,
        season=season,
    )


def format_report(r: EvalReport) -> str:
    """The table ``gekko eval`` prints (also pasted, verbatim, into docs/forecasting.md)."""
    how = f"{r.folds}-fold walk-forward" if r.folds else "held-out last part"
    n = r.rows[0].n if r.rows else 0
    lines = [
        f"{r.data or 'data'}: {how}, {n} test windows, input {r.input_size} bars, "
        f"horizon {r.horizon}, seasonal naive season {r.season}",
        f"| {'forecaster':<15} | {'MAE':>9} | {'RMSE':>9} | {'MASE':>6} | {'sMAPE %':>8} | "
        f"{'dir. acc. (95% CI)':>24} | {'n dir':>6} |",
        f"|{'-' * 17}|{'-' * 11}|{'-' * 11}|{'-' * 8}|{'-' * 10}|{'-' * 26}|{'-' * 8}|",
    ]
    for m in r.rows:
        if m.dir_acc is None:
            da = "no direction called"
        else:
            da = f"{100 * m.dir_acc:.1f}% [{100 * m.ci_low:.1f}, {100 * m.ci_high:.1f}]"  # type: ignore[operator]
        lines.append(
            f"| {m.name:<15} | {m.mae:>9.3g} | {m.rmse:>9.3g} | {m.mase:>6.3f} | "
            f"{m.smape:>8.4f} | {da:>24} | "
            f"{m.n_dir:>6} |"
        )
    if r.coverage is not None:
        lines.append(
            f"outer quantile band holds {100 * r.coverage:.1f}% of actual returns "
            f"(nominal {100 * (r.nominal or 0):.0f}%)"
        )
    if r.prob:
        from models.prob_eval import format_prob

        lines.append(format_prob(r.prob, r.dm, r.levels))
    lines += [f"note: {n}" for n in r.notes]
    for g in r.gaps:
        flag = "  <- large: overfitting, or a calmer training period" if g.gap > 0.25 else ""
        lines.append(
            f"fold {g.fold}: train loss {g.train_loss:.4f}, validation {g.val_loss:.4f} "
            f"(gap {100 * g.gap:+.1f}%, {g.epochs} epochs){flag}"
        )
    return "\n".join(lines)
