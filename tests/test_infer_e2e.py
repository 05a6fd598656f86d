"""`gekko run` with the infer worker: real processes, a model registry changed while it runs.

One run covers the life of a model in production: the engine starts on a broken (truncated)
model and trades on without forecasts; a good version appears and is hot-swapped in without a
restart; the forecast strategy trades on its forecasts; a newer version of the wrong shape is
refused and the last good model keeps serving.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests._onnx_models import write_model
from tests.test_engine_e2e import (
    counter,
    running_engine,
    summary_of,
    wait_counter,
    write_config,
)

pytestmark = pytest.mark.timeout(180)


def _config(tmp_path: Path, eid: str, reg: Path) -> Path:
    cfg = write_config(tmp_path, eid)
    text = cfg.read_text()
    start = text.index("\n[inference]\n") + 1
    end = text.index("\n[", start + 1)
    section = text[start:end]
    for key, lit in (("model_dir", f'"{reg}"'), ("every_n_ticks", "150"), ("poll_model_s", "0.2")):
        section, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {lit}", section)
        assert n == 1, key
    text = text[:start] + section + text[end:]
    # no system of record: this test is about the model, and PostgreSQL start/stop is slow
    if "\n[storage.postgres]\n" in text:
        at = text.index("\n[storage.postgres]\n") + 1
        head, tail = text[:at], text[at:]
        tail, n = re.subn(r"(?m)^mode = .*$", 'mode = "off"', tail, count=1)
        assert n == 1
        text = head + tail
    else:
        text += '\n[storage.postgres]\nmode = "off"\n'
    cfg.write_text(text)
    return cfg


def _wait_for_text(path: Path, needle: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def test_broken_model_then_hot_swap_then_refused_version(tmp_path: Path) -> None:
    eid = "i" + uuid.uuid4().hex[:7]
    reg = tmp_path / "registry"
    bad = write_model(reg / "v1", "v1", input_size=4, created="2026-01-01T00:00:00+00:00")
    (bad / "model.onnx").write_bytes((bad / "model.onnx").read_bytes()[:60])  # truncated
    cfg = _config(tmp_path, eid, reg)
    log = tmp_path / "engine.log"
    with running_engine(cfg, tmp_path, eid) as proc:
        # the engine's stderr goes to a file we can read while it runs
        def pump() -> None:
            assert proc.stderr is not None
            with open(log, "a") as f:
                for line in proc.stderr:
                    f.write(line)
                    f.flush()

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        assert _wait_for_text(log, "cannot serve", 120), log.read_text()[-3000:]
        assert _wait_for_text(log, "engine " + eid + " running", 120)
        # a good version: hot-swapped in by the running infer process (no restart)
        write_model(
            reg / "v2",
            "v2",
            input_size=4,
            scale=50.0,
            band=1e-5,
            created="2026-01-02T00:00:00+00:00",
        )
        assert _wait_for_text(log, "serving tiny v2", 90), log.read_text()[-3000:]
        # forecasts flow (more than the runs and bars asserted below), and orders follow them
        assert wait_counter(eid, "infer", "runs", 8), log.read_text()[-3000:]
        assert wait_counter(eid, "infer", "bars", 12), log.read_text()[-3000:]
        assert wait_counter(eid, "risk", "approved", counter(eid, "risk", "approved") + 3)
        # a newer version with the wrong input shape: refused, v2 keeps serving
        write_model(
            reg / "v3", "v3", input_size=4, onnx_features=3, created="2026-01-03T00:00:00+00:00"
        )
        assert _wait_for_text(log, "refusing the new model", 90), log.read_text()[-3000:]
        # ... and the last good model keeps serving: forecasts go on
        assert wait_counter(
            eid, "infer", "forecasts_out", counter(eid, "infer", "forecasts_out") + 3
        )
        proc.send_signal(2)  # SIGINT: a clean stop
        proc.wait(60)
        t.join(10)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "sha256" in text and "truncated" in text  # why v1 was not served
    assert "expected [batch, 4, 5]" in text and "still serving tiny v2" in text
    m = re.search(
        r"infer: (\d+) bars, (\d+) model runs, (\d+) forecasts, (\d+) swaps, (\d+) refused", text
    )
    assert m is not None, text[-3000:]
    bars, runs, forecasts, _swaps, refused = map(int, m.groups())
    assert bars > 10 and runs > 5 and forecasts == 3 * runs and refused == 2
    s = summary_of(tmp_path)
    inf = s["inference"]  # the same counts, from infer's shared-memory metrics
    assert (inf["bars"], inf["runs"], inf["forecasts_out"], inf["model_rejects"]) == (
        bars,
        runs,
        forecasts,
        refused,
    )
    assert not [r for r in s.get("restarts", []) if r["worker"] == "infer"]  # never restarted
    orders = [
        json.loads(x)
        for x in (tmp_path / "var" / "last_run" / "orders.jsonl").read_text().splitlines()
    ]
    by_strategy = {o["strategy_id"] for o in orders if o["type"] == "NewOrder"}
    assert {1, 2, 3} <= by_strategy  # the other strategies traded throughout; 3 traded forecasts
    assert s["consistent"] is True
