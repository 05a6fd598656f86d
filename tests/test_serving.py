"""models.serving: provider fallback, validated loading, bad files, hot swap."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.serving import (
    CPU,
    ModelError,
    ModelServer,
    load_model,
    make_session,
    resolve_providers,
    unavailable_providers,
)
from tests._onnx_models import build_onnx, write_model


def test_a_preference_list_falls_back_in_order_without_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default ["cuda", "coreml", "cpu"] on a CPU-only build: no warning on every run (the
    serving line names what was skipped), one DEBUG line per missing provider."""
    with caplog.at_level(logging.DEBUG, logger="gekko.models.serving"):
        chain = resolve_providers(["cuda", "coreml", "cpu"], available=["CPUExecutionProvider"])
    assert chain == [CPU]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]
    lines = [r.getMessage() for r in caplog.records]
    assert "CUDAExecutionProvider is not available" in lines[0] and lines[0].endswith(
        "falling back to CPUExecutionProvider"
    )
    assert "CoreMLExecutionProvider is not available" in lines[1]
    assert unavailable_providers(["cuda", "coreml", "cpu"], available=[CPU]) == ["cuda", "coreml"]


def test_a_fallback_the_list_does_not_name_is_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gekko.models.serving"):
        chain = resolve_providers(["cuda", "coreml"], available=[CPU])
    assert chain == [CPU]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(r.levelno == logging.WARNING for r in caplog.records)
    assert "CUDAExecutionProvider is not available" in lines[0]
    assert lines[0].endswith("falling back to CPUExecutionProvider")
    assert "CoreMLExecutionProvider is not available" in lines[1]


def test_fallback_names_the_next_available_provider(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gekko.models.serving"):
        chain = resolve_providers(
            ["cuda", "coreml", "cpu"], available=["CoreMLExecutionProvider", CPU]
        )
    assert chain == ["CoreMLExecutionProvider", CPU]
    assert [r.getMessage().split()[-1] for r in caplog.records] == ["CoreMLExecutionProvider"]


def test_available_providers_are_kept_and_cpu_is_always_last() -> None:
    assert resolve_providers(
        ["CUDAExecutionProvider"], available=["CUDAExecutionProvider", CPU]
    ) == ["CUDAExecutionProvider", CPU]
    assert resolve_providers([], available=[CPU]) == [CPU]


def test_session_on_this_machine_runs_on_cpu_after_fallback(tmp_path: Path) -> None:
    sess = make_session(build_onnx(), ["cuda", "coreml", "cpu"], intra_op_threads=1)
    assert sess.get_providers() == [CPU]
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def test_load_model_runs_and_matches_the_graph(tmp_path: Path) -> None:
    m = load_model(write_model(tmp_path / "m", scale=2.0, bias=0.5), providers=["cuda", "cpu"])
    assert (m.name, m.version, m.input_size, m.horizon, m.n_features) == ("tiny", "1", 8, 3, 5)
    x = np.random.default_rng(0).normal(size=(64, 8, 5)).astype(np.float32)
    point, q = m.run(x)
    want = 2.0 * x[:, :, 0].mean(axis=1) + 0.5
    np.testing.assert_allclose(point, np.repeat(want[:, None], 3, axis=1), rtol=1e-5, atol=1e-6)
    assert q.shape == (64, 3, 3)
    assert (q[:, :, 0] < q[:, :, 2]).all()


def test_refuses_a_model_whose_features_differ(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", features=("ret", "range", "log_volume", "tod_cos", "tod_sin"))
    with pytest.raises(ModelError, match=r"input layout .* does not match the configured features"):
        load_model(d)


def test_refuses_an_onnx_input_of_the_wrong_shape(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", onnx_features=4)
    with pytest.raises(
        ModelError, match=r"has shape \['batch', 8, 4\] .* expected \[batch, 8, 5\]"
    ):
        load_model(d)


def test_refuses_a_frozen_batch_dimension(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", batch=1)
    with pytest.raises(ModelError, match="batch dimension .* frozen at 1"):
        load_model(d)


def test_truncated_model_file_is_a_clear_error(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    blob = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelError, match="sha256 .* does not match .*truncated"):
        load_model(d)
    # without a hash to compare, onnxruntime's own refusal is reported with the file name
    meta = json.loads((d / "meta.json").read_text())
    del meta["onnx_sha256"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"model\.onnx: onnxruntime cannot load it"):
        load_model(d)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.pop("horizon"), "missing key 'horizon'"),
        (lambda m: m.update(format=2), "format 2 is not supported"),
        (lambda m: m.update(input_size="8"), "input_size must be int"),
        (lambda m: m.update(horizon=4), r"horizon=4 .* expected \(1, 4\)"),
    ],
)
def test_bad_meta_is_a_clear_error(tmp_path: Path, edit, match: str) -> None:  # type: ignore[no-untyped-def]
    d = write_model(tmp_path / "m")
    meta = json.loads((d / "meta.json").read_text())
    edit(meta)
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=match):
        load_model(d)


def test_meta_that_is_not_json(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(ModelError, match="meta.json: not readable JSON"):
        load_model(d)


def _touch_later(d: Path) -> None:
    for f in ("meta.json", "model.onnx"):
        st = os.stat(d / f)
        os.utime(d / f, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))


def test_server_hot_swaps_a_new_version_in_a_registry(tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    write_model(reg / "v1", "v1", scale=1.0, created="2026-01-01T00:00:00+00:00")
    srv = ModelServer(reg)
    ev = srv.poll()
    assert ev is not None and ev.kind == "loaded" and srv.current.version == "v1"
    assert srv.poll() is None  # nothing new
    write_model(reg / "v2", "v2", scale=3.0, created="2026-01-02T00:00:00+00:00")
    ev = srv.poll()
    assert ev is not None and (ev.kind, ev.old_version, ev.version) == ("swapped", "v1", "v2")
    x = np.ones((2, 8, 5), dtype=np.float32)
    np.testing.assert_allclose(srv.current.run(x)[0], 3.0)


def test_bad_new_version_is_refused_and_the_last_good_model_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = tmp_path / "registry"
    write_model(reg / "v1", "v1", created="2026-01-01T00:00:00+00:00")
    srv = ModelServer(reg)
    srv.poll()
    # a newer version with the wrong input shape, then a truncated one
    write_model(reg / "v2", "v2", onnx_features=4, created="2026-01-02T00:00:00+00:00")
    with caplog.at_level(logging.ERROR, logger="gekko.models.serving"):
        ev = srv.poll()
    assert ev is not None and ev.kind == "rejected" and ev.version == "v2"
    assert "still serving tiny v1" in caplog.text and "expected [batch, 8, 5]" in caplog.text
    assert srv.current.version == "v1"
    assert srv.poll() is None  # the refused version is not retried (nor logged) every poll
    d3 = write_model(reg / "v3", "v3", created="2026-01-03T00:00:00+00:00")
    blob = (d3 / "model.onnx").read_bytes()
    (d3 / "model.onnx").write_bytes(blob[:40])
    ev = srv.poll()
    assert ev is not None and ev.kind == "rejected" and "truncated" in ev.reason
    assert srv.current.version == "v1"
    assert srv.current.run(np.zeros((1, 8, 5), dtype=np.float32))[0].shape == (1, 3)
    # the copy completes: the same version directory is tried again and swapped in
    write_model(reg / "v3", "v3", scale=5.0, created="2026-01-03T00:00:00+00:00")
    _touch_later(d3)
    ev = srv.poll()
    assert ev is not None and ev.kind == "swapped" and srv.current.version == "v3"


def test_the_serving_line_names_the_skipped_providers_and_nothing_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a new user sees on a CPU-only machine with the default providers: one INFO line."""
    monkeypatch.setattr("models.serving.ort.get_available_providers", lambda: [CPU])
    with caplog.at_level(logging.DEBUG, logger="gekko.models.serving"):
        srv = ModelServer(write_model(tmp_path / "m"), providers=["cuda", "coreml", "cpu"])
        assert srv.poll().kind == "loaded"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    serving = [r.getMessage() for r in caplog.records if "serving" in r.getMessage()]
    assert len(serving) == 1
    assert (
        "providers CPUExecutionProvider; cuda, coreml: not in this onnxruntime build"
        in (serving[0])
    )


def test_single_model_directory_is_reloaded_when_its_files_change(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m", "a")
    srv = ModelServer(d)
    assert srv.poll().kind == "loaded"
    write_model(d, "b", scale=2.0)
    _touch_later(d)
    ev = srv.poll()
    assert ev is not None and (ev.kind, ev.old_version, ev.version) == ("swapped", "a", "b")


def test_no_model_at_all_serves_nothing_without_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gekko.models.serving"):
        srv = ModelServer(tmp_path / "nowhere")
        assert srv.poll() is None and srv.poll() is None
    assert srv.current is None
    assert caplog.text.count("no model at") == 1


def test_an_exception_that_says_nothing_is_named_by_its_type_not_an_index_error() -> None:
    from models.serving import first_line

    assert first_line(RuntimeError(""), 300) == "RuntimeError"
    assert first_line(RuntimeError("bad shape\ndetails"), 5) == "bad s"
