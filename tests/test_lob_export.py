"""Micro models as ONNX: the served P(up) equals the fitted model's (standardisation baked in, any
batch size), and a model trained on other features, a tampered file or another format is
refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.lob_eval import samples
from models.lob_export import MicroModel, MicroModelError, export_micro
from models.lob_models import MLP, LinearLogit
from tests.test_lob_features import REAL_DATA, _random_stream


def _fitted(kind: str):  # type: ignore[no-untyped-def]
    x, y, _, _ = samples(_random_stream(4000, 3))
    f = LinearLogit() if kind == "logit" else MLP(seed=1, epochs=3)
    return f.fit(x, y), x


@pytest.mark.parametrize("kind", ["logit", "mlp"])
def test_the_served_probability_is_the_fitted_models(tmp_path: Path, kind: str) -> None:
    f, x = _fitted(kind)
    export_micro(f, tmp_path / "m", {"expected_move": 1.0})
    served = MicroModel(tmp_path / "m")
    for rows in (x[:1], x[:333], x):
        np.testing.assert_allclose(served.p_up(rows), f.predict(rows), atol=1e-5)
    assert served.meta["expected_move"] == 1.0 and served.meta["parity"] <= 1e-5


def test_a_model_of_other_features_a_changed_file_or_format_is_refused(tmp_path: Path) -> None:
    f, _ = _fitted("logit")
    d = export_micro(f, tmp_path / "m", {})
    meta = json.loads((d / "meta.json").read_text())
    for change, why in (
        ({"features": meta["features"][::-1]}, "other features"),
        ({"format": "gekko-model-1"}, "format"),
        ({"onnx_sha256": "0" * 64}, "hash"),
    ):
        (d / "meta.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(MicroModelError, match=why):
            MicroModel(d)
    (d / "meta.json").unlink()
    with pytest.raises(MicroModelError):
        MicroModel(d)


def test_micro_train_writes_a_model_that_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    msg = REAL_DATA / "lobster" / "AMZN_2012-06-21_34200000_57600000_message_1.csv"
    if not msg.exists():
        pytest.skip(f"{msg} is absent (no shared data checkout)")
    from ops.cli import main

    out = tmp_path / "amzn"
    args = ["micro-train", "--lobster", str(msg), "--train-frac"]
    assert main([*args, "0.7", "--out", str(out)]) == 0
    m = MicroModel(out)
    assert m.meta["stream"] == "AMZN-L1" and m.meta["train_frac"] == 0.7
    assert m.meta["expected_move"] > 0 and "micro-train" in m.meta["command"]
    # the drift monitors' references: the training rows' feature distribution, and the
    # held-out block's log loss per mid change (better than a coin on AMZN)
    h = m.meta["holdout"]
    assert h["block"] == "held-out" and h["changes"] > 1000 and 0.5 < h["log_loss"] < 0.69
    assert h["hit_rate"] > 0.55 and m.meta["feature_stats"]["rows"] == m.meta["train_rows"]
    assert main([*args, "0.001", "--out", str(tmp_path / "x")]) == 2
    assert "too few" in capsys.readouterr().err
