"""A live key the venue says can withdraw is refused (ops/venue_run.py ``check_key``): the probe
against each local exchange server (engine/venues/ccxt_permissions.py), the decision on every
answer (fail closed on none), and `gekko run --live` refusing with exit 2 and an audit record."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engine.venues.ccxt_permissions import KeyAbilities, probe_key
from ops.config import parse_config
from ops.venue_keys import KeyRules
from ops.venue_run import KeyRefused, check_key, pick_venue
from tests.conftest import ROOT
from tests.test_preflight import set_key
from tests.venues import server_class

BASE = (ROOT / "config.toml").read_text()


def _keys(kind: str) -> tuple[str, str]:
    if kind == "coinbase":
        from tests.venues.coinbase_auth import new_test_key

        name, pem, _ = new_test_key()
        return name, pem
    if kind == "kraken":
        from tests.venues.kraken_wire import new_test_key as kraken_key

        return kraken_key()
    return uuid.uuid4().hex * 2, uuid.uuid4().hex * 2


@pytest.mark.parametrize("kind", ["binanceus", "coinbase", "kraken"])
def test_each_venue_says_whether_the_key_can_withdraw(kind: str) -> None:
    from engine.venues.ccxt_session import Credentials

    (k1, s1), (k2, s2) = _keys(kind), _keys(kind)
    with server_class(kind)() as srv:
        srv.add_key(k1, s1)
        srv.add_key(k2, s2, account="other", withdraw=True)
        settings = {"rest_url": srv.rest_url, "ws_url": srv.ws_url, "timeout_ms": 5000}
        trade_only = probe_key(kind, settings, Credentials(k1, s1))
        withdraws = probe_key(kind, settings, Credentials(k2, s2))
    assert trade_only.can_withdraw is False and withdraws.can_withdraw is True
    if kind != "kraken":  # Kraken's probe says nothing about trading
        assert trade_only.can_trade is True


def _cfg() -> Any:
    extra = '\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\n'
    cfg, _ = pick_venue(parse_config(BASE + extra, "gekko.toml"), "bn")
    return cfg


def _probe(answer: Any) -> Any:
    def probe(exchange_id: str, settings: Any, creds: Any) -> KeyAbilities:
        if isinstance(answer, Exception):
            raise answer
        return answer

    return probe


@pytest.mark.parametrize(
    ("rules", "answer", "problem"),
    [
        (KeyRules("bn-main", "read"), KeyAbilities(False, True, "x"), 'permissions = "read"'),
        (
            KeyRules("bn-main"),
            KeyAbilities(True, True, "GET /x"),
            "says keystore entry 'bn-main' can withdraw (GET /x): refused",
        ),
        (KeyRules(), KeyAbilities(True, True, "GET /x"), "says the key of bn can withdraw"),
        (KeyRules(), KeyAbilities(None, True, "GET /x"), "did not say whether"),
        (
            KeyRules(),
            OSError("connection reset"),
            "cannot tell whether the key of bn can withdraw (OSError: connection reset): refused",
        ),
        (KeyRules(), KeyAbilities(False, False, "GET /x"), "cannot trade"),
    ],
)
def test_a_key_that_can_withdraw_or_cannot_be_checked_is_refused(
    rules: KeyRules, answer: Any, problem: str
) -> None:
    cfg = _cfg()
    with pytest.raises(KeyRefused) as err:
        check_key(cfg, cfg.real_venues()[0], object(), rules, _probe(answer))
    assert err.value.key == "venues[bn]" and problem in err.value.problem, err.value.problem


def test_allow_withdraw_on_the_entry_lets_such_a_key_trade(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = _cfg()
    v = cfg.real_venues()[0]
    ok = KeyAbilities(False, True, "GET /x")
    assert check_key(cfg, v, object(), KeyRules("bn-main"), _probe(ok)) == "GET /x"
    can = KeyAbilities(True, True, "GET /x")
    assert check_key(cfg, v, object(), KeyRules("bn-main", allow_withdraw=True), _probe(can))
    assert "can withdraw: allowed by its keystore entry" in caplog.text


def test_gekko_run_live_refuses_a_withdrawing_key_exit_2_and_audits_it(
    tmp_path: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ops.cli import main

    key, secret = _keys("binanceus")
    monkeypatch.setenv("GEKKO_BN_API_KEY", key)
    monkeypatch.setenv("GEKKO_BN_API_SECRET", secret)
    with server_class("binanceus")() as srv:
        srv.add_key(key, secret, withdraw=True)
        text = BASE.replace('id = "gekko"', 'id = "kw' + uuid.uuid4().hex[:6] + '"', 1)
        text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
        text = set_key(text, "storage.postgres", f'mode = "{pg_dsn}"')
        text += (
            f'\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\n'
            f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\n'
        )
        cfg = tmp_path / "gekko.toml"
        cfg.write_text(text)
        rc = main(["run", "--config", str(cfg), "--venue", "bn", "--live", "--duration", "1"])
        seen = dict(srv.requests)
    out = capsys.readouterr()
    assert rc == 2, out.err
    assert (
        "the venue says the key of bn can withdraw (GET /sapi/v1/account/apiRestrictions)"
        in out.err
    )
    assert seen.get("GET /sapi/v1/account/apiRestrictions") == 1  # asked after the markets
    with psycopg.connect(pg_dsn) as c:
        rows = c.execute(
            "SELECT actor, detail::text FROM audit_log WHERE action = 'keys.refused'"
        ).fetchall()
    assert len(rows) == 1 and "can withdraw" in rows[0][1]
    assert key not in out.out + out.err + rows[0][1] and secret not in rows[0][1]


def test_the_pre_flight_uses_the_keys_then_forgets_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A live pre-flight that passes (the key cannot withdraw): the supervisor's process keeps
    no reference to the keys (no longer masked: not registered), the run's config holds none."""
    import msgspec

    from ops.cli import _venue_run
    from ops.secrets import redact

    key, secret = _keys("binanceus")
    monkeypatch.setenv("GEKKO_BN_API_KEY", key)
    monkeypatch.setenv("GEKKO_BN_API_SECRET", secret)
    with server_class("binanceus")() as srv:
        srv.add_key(key, secret)
        extra = (
            f'\n[[venues]]\nname = "bn"\nkind = "binanceus"\nlive = true\n'
            f'rest_url = "{srv.rest_url}"\nws_url = "{srv.ws_url}"\n'
        )
        cfg = _venue_run(parse_config(BASE + extra, tmp_path / "gekko.toml"), "bn", True)
        assert srv.requests["GET /sapi/v1/account/apiRestrictions"] == 1
    assert capsys.readouterr().out.startswith("LIVE trading on bn")
    assert cfg.resolved.live == ["bn"]
    assert key not in str(msgspec.to_builtins(cfg)) and secret not in str(msgspec.to_builtins(cfg))
    assert redact(key) == key and redact(secret) == secret  # forgotten by this process
