"""`gekko run` with a micro model: the infer process steps the feature state on the live market's
book events and publishes direction forecasts beside the bar model's, and swaps in a new version
that appears while it runs."""

from __future__ import annotations

import re
import signal
import time
import uuid
from pathlib import Path

import pytest

from models.lob_eval import samples
from models.lob_export import export_micro
from models.lob_models import LinearLogit
from tests.test_engine_e2e import running_engine, write_config
from tests.test_lob_features import _random_stream

pytestmark = pytest.mark.timeout(180)


def test_the_engine_serves_a_micro_model_per_book_event(tmp_path: Path) -> None:
    x, y, _, _ = samples(_random_stream(3000, 9, levels=1))
    meta = {"expected_move_ticks": 1.0, "levels": 1, "coalesce": False, "stream": "synthetic"}
    model = tmp_path / "micro"  # a directory of versions: the newest serves
    export_micro(LinearLogit().fit(x, y), model / "v1", meta)
    x, y, _, _ = samples(_random_stream(3000, 10, levels=1))
    staged = export_micro(LinearLogit().fit(x, y), tmp_path / "v2", meta | {"stream": "second"})
    eid = "m" + uuid.uuid4().hex[:7]
    cfg = write_config(tmp_path, eid)
    text = cfg.read_text()
    text, n = re.subn(r'(?m)^micro_model_dir = ""', f'micro_model_dir = "{model}"', text)
    assert n == 1
    at = text.index("\n[storage.postgres]\n")  # no system of record: not what this is about
    tail, n = re.subn(r'(?m)^mode = "embedded"', 'mode = "off"', text[at:], count=1)
    assert n == 1
    cfg.write_text(text[:at] + tail)
    with running_engine(cfg, tmp_path, eid) as proc:
        time.sleep(2)
        staged.rename(model / "v2")  # a new version appears, whole: swapped in at a poll
        try:
            proc.wait(timeout=5)
        except Exception:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "crashed" not in err and "restarting" not in err, err[-3000:]
    assert "micro model micro:synthetic" in err, err[-3000:]
    assert "hot-swapped micro model micro:synthetic:" in err and "-> micro:second:" in err, err
    m = re.search(
        r"micro model micro:second\S+: (\d+) events scored, (\d+) forecasts, 1 swaps", err
    )
    assert m is not None, err[-3000:]
    scored, published = int(m.group(1)), int(m.group(2))
    assert scored > 100 and 0 < published <= scored
