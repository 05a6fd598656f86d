"""ONNX export: the batch dimension is truly dynamic and onnxruntime matches PyTorch within
1e-4 at batch sizes 1, 8, 64 and 333, for both architectures; a model that freezes its batch
size during tracing is caught."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from models.export import ExportError, export_onnx, load_checkpoint, save_checkpoint  # noqa: E402
from models.features import FEATURES  # noqa: E402
from models.net import Forecaster  # noqa: E402
from models.scaling import Scaler  # noqa: E402
from models.train import TrainConfig, build_model  # noqa: E402

L, H = 24, 5
QUANTILES = (0.1, 0.5, 0.9)


def _model(arch: str, seed: int = 0) -> Forecaster:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (500, L, len(FEATURES))) * [1e-3, 5e-4, 2.0, 0.7, 0.7] + [
        0,
        1e-3,
        8,
        0,
        0,
    ]
    torch.manual_seed(seed)
    cfg = TrainConfig(architecture=arch, input_size=L, horizon=H, quantiles=QUANTILES)
    return build_model(cfg, Scaler.fit(x, "robust")).eval()


@pytest.mark.parametrize("arch", ["nhits", "nbeatsx"])
def test_onnx_matches_torch_at_any_batch_size(arch, tmp_path):
    model = _model(arch)
    path = tmp_path / "model.onnx"
    export_onnx(model, path, L)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert [o.name for o in sess.get_outputs()] == ["point", "quantiles"]
    assert isinstance(sess.get_inputs()[0].shape[0], str)  # symbolic batch
    rng = np.random.default_rng(42)
    scale = model.scale.numpy()
    for batch in (1, 8, 64, 333):
        x = model.center.numpy() + scale * rng.standard_normal((batch, L, len(FEATURES)))
        x = x.astype(np.float32)
        point, quant = sess.run(None, {"x": x})
        with torch.no_grad():
            tp, tq = model(torch.from_numpy(x))
        assert point.shape == (batch, H) and quant.shape == (batch, H, len(QUANTILES))
        # within 1e-4 in raw units AND in units of the target's scale (raw returns are ~1e-3)
        for o, t in ((point, tp.numpy()), (quant, tq.numpy())):
            assert np.abs(o - t).max() <= 1e-4
            assert np.abs(o - t).max() / scale[0] <= 1e-4
        # rows are independent: the first row alone gives the same forecast
        p1, _ = sess.run(None, {"x": x[:1]})
        assert np.allclose(p1[0], point[0], atol=1e-7)


class _FrozenBatch(torch.nn.Module):
    """A core that reads the batch size as a Python int: tracing bakes it into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(L * len(FEATURES), H * (1 + len(QUANTILES)))

    def forward(self, x):
        return self.lin(x.reshape(len(x), -1)).reshape(len(x), H, 1 + len(QUANTILES))


def test_a_frozen_batch_size_is_caught(tmp_path):
    model = Forecaster(_FrozenBatch(), Scaler("standard", (0.0,) * 5, (1.0,) * 5), QUANTILES)
    with pytest.raises(ExportError):
        export_onnx(model, tmp_path / "frozen.onnx", L)
    assert not (tmp_path / "frozen.onnx").exists()  # nothing half-checked is left behind


def test_checkpoint_round_trip_reexports_identically(tmp_path):
    model = _model("nbeatsx", seed=3)
    cfg = TrainConfig(architecture="nbeatsx", input_size=L, horizon=H, quantiles=QUANTILES)
    save_checkpoint(tmp_path / "model.pt", cfg, model)
    cfg2, model2 = load_checkpoint(tmp_path / "model.pt")
    assert cfg2.to_dict() == cfg.to_dict()
    x = torch.randn(7, L, len(FEATURES))
    with torch.no_grad():
        assert torch.equal(model(x)[0], model2(x)[0])
