"""The ``[exec]`` config section: it loads into ``ExecPolicy``; defaults, errors that name the key."""

from __future__ import annotations

import pytest

from engine.exec_policy import ExecPolicy
from engine.messages import OrderType
from ops.config import ConfigError, load_config, parse_config
from tests.conftest import ROOT

MINIMAL = '[[instruments]]\ninstrument_id = 0\nsymbol = "A"\n'


def test_shipped_and_default_exec_sections_are_a_policy():
    cfg = load_config(ROOT / "config.toml")
    p = cfg.exec
    assert isinstance(p, ExecPolicy)
    assert p.native_types == {int(OrderType.MARKET), int(OrderType.LIMIT)}
    assert p.halt_policy in ("hold", "reject")
    d = parse_config(MINIMAL).exec  # no [exec] at all: the defaults
    assert d.max_retries == 2 and d.retry_backoff_ns == 50_000_000 and d.emulate


def test_exec_section_values_reach_the_policy():
    text = (
        "[exec]\nmax_retries = 5\nretry_backoff_ms = 1.5\nretry_on = ['Busy']\n"
        "price_gap_bps = 0\nhalt_policy = 'reject'\n"
        "native_order_types = ['MARKET', 'LIMIT', 'STOP']\nemulate = false\n" + MINIMAL
    )
    p = parse_config(text).exec
    assert (p.max_retries, p.retry_backoff_ns, p.retry_on) == (5, 1_500_000, ("busy",))
    assert p.price_gap_bps == 0 and p.halt_policy == "reject" and not p.emulate
    assert int(OrderType.STOP) in p.native_types


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("halt_policy = 'pause'", "exec.halt_policy"),
        ("native_order_types = ['MARKET']", "exec.native_order_types"),
        ("native_order_types = ['MARKET', 'LIMIT', 'ICEBERG']", "exec.native_order_types"),
        ("price_gap_bps = -1", "exec.price_gap_bps"),
        ("max_retries = -1", "exec.max_retries"),
        ("retry_backoff_factor = 0.5", "exec.retry_backoff_factor"),
        ("retry_on = ['']", "exec.retry_on"),
        ("retries = 3", "exec.retries"),
    ],
)
def test_exec_config_errors_name_the_key(line: str, key: str):
    with pytest.raises(ConfigError) as err:
        parse_config(f"[exec]\n{line}\n" + MINIMAL)
    assert err.value.key == key
