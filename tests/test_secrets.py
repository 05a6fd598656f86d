"""Secrets: ``${ENV}`` references and ``<key>_file`` siblings resolved at load (ops/secrets.py),
and one redaction that hides them — and any URL password — wherever text is shown or stored."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import msgspec
import pytest

from ops.cli import main as gekko_main
from ops.config import ConfigError, load_config
from ops.logs import JsonFormatter, TextFormatter, mask_secrets
from ops.secrets import redact
from tests.conftest import ROOT

PW = "Pw-7fG2kQ9xZ"


def _config(tmp_path: Path, **postgres: str) -> Path:
    """The default config, ``[storage.postgres]`` keys replaced/added from ``postgres``."""
    text = (ROOT / "config.toml").read_text()
    head, sep, tail = text.partition("[storage.postgres]\n")
    body, nxt, rest = tail.partition("\n[")
    drop = set(postgres) | {k.removesuffix("_file") for k in postgres}  # mode_file replaces mode
    lines = [ln for ln in body.split("\n") if ln.split("=")[0].strip() not in drop]
    added = "".join(f"{k} = {msgspec.json.encode(v).decode()}\n" for k, v in postgres.items())
    path = tmp_path / "config.toml"
    path.write_text(head + sep + added + "\n".join(lines) + nxt + rest)
    return path


def _secret_file(tmp_path: Path, content: str, mode: int = 0o600) -> Path:
    p = tmp_path / "pg_dsn"
    p.write_text(content)
    p.chmod(mode)
    return p


# --- ${ENV} ---------------------------------------------------------------------------------------
def test_env_references_resolve_in_any_string(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GK_T_PW", PW)
    monkeypatch.setenv("GK_T_HOST", "db.example")
    cfg = load_config(_config(tmp_path, mode="postgresql://gekko:${GK_T_PW}@${GK_T_HOST}/gekko"))
    assert cfg.storage.postgres.mode == f"postgresql://gekko:{PW}@db.example/gekko"
    assert PW not in mask_secrets(f"connect to {PW} failed")  # a value from the env: a secret


def test_an_unset_or_empty_variable_is_a_config_error_naming_key_and_variable(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("GK_T_UNSET", raising=False)
    path = _config(tmp_path, mode="postgresql://gekko:${GK_T_UNSET}@db/gekko")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == "storage.postgres.mode" and "GK_T_UNSET" in e.value.problem
    assert "not set" in e.value.problem
    monkeypatch.setenv("GK_T_UNSET", "")
    with pytest.raises(ConfigError, match="GK_T_UNSET is empty"):
        load_config(path)
    # the CLI: exit 2, the key and the variable named
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert gekko_main(["status", "--config", str(path)]) == 2
    assert "storage.postgres.mode" in err.getvalue() and "GK_T_UNSET" in err.getvalue()


def test_dollar_dollar_is_a_literal_and_a_malformed_reference_is_an_error(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, data_dir=str(tmp_path / "a$${b}")))
    assert cfg.storage.postgres.data_dir == str(tmp_path / "a${b}")
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, data_dir="${not closed"))
    assert e.value.key == "storage.postgres.data_dir" and "malformed" in e.value.problem


# --- <key>_file -----------------------------------------------------------------------------------
def test_a_key_file_sibling_reads_the_value_trailing_newline_stripped(
    tmp_path: Path, monkeypatch
) -> None:
    dsn = f"postgresql://gekko:{PW}@db.example/gekko"
    f = _secret_file(tmp_path, dsn + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # systemd LoadCredential
    cfg = load_config(_config(tmp_path, mode_file="${CREDENTIALS_DIRECTORY}/pg_dsn"))
    assert cfg.storage.postgres.mode == dsn
    cfg = load_config(_config(tmp_path, mode_file=str(f)))
    assert cfg.storage.postgres.mode == dsn
    # [risk] state_file is a key of its own, not a sibling of a "state" key
    assert load_config(_config(tmp_path)).risk.state_file == ""


def test_a_secret_file_others_may_read_is_refused_naming_it(tmp_path: Path) -> None:
    f = _secret_file(tmp_path, "postgresql://u:p@h/d\n", 0o644)
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, mode_file=str(f)))
    assert e.value.key == "storage.postgres.mode_file" and str(f) in e.value.problem
    assert "0644" in e.value.problem
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="group or others"):
        load_config(_config(tmp_path, mode_file=str(f)))


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"mode_file": "FILE", "mode": "off"}, "give mode or mode_file, not both"),
        ({"mode_file": "/nonexistent/gk/secret"}, "cannot read secret file /nonexistent/gk/secret"),
        ({"mode_file": "EMPTY"}, "is empty"),
    ],
)
def test_key_file_errors(tmp_path: Path, keys: dict, problem: str) -> None:
    f = _secret_file(tmp_path, "postgresql://u:p@h/d")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    subst = {"FILE": str(f), "EMPTY": str(empty)}
    with pytest.raises(ConfigError) as e:
        load_config(_config(tmp_path, **{k: subst.get(v, v) for k, v in keys.items()}))
    assert problem in e.value.problem and e.value.key.startswith("storage.postgres.mode")


def test_a_value_from_a_file_is_masked_in_logs(tmp_path: Path) -> None:
    secret = "k3y-from-file-" + os.urandom(4).hex()
    f = tmp_path / "redis_url"
    f.write_text(f"redis://:{secret}@localhost:6399/0\n")
    f.chmod(0o400)
    text = (
        (ROOT / "config.toml")
        .read_text()
        .replace("[storage.redis]\n", f'[storage.redis]\nmode_file = "{f}"\n', 1)
    )
    text = text.replace('mode = "embedded"   #', "#", 1)  # the redis mode line goes
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    assert secret in cfg.storage.redis.mode
    rec = logging.LogRecord("x", logging.ERROR, "", 0, "token %s bare", (secret,), None)
    for fmt in (TextFormatter("bridge"), JsonFormatter("bridge")):
        out = fmt.format(rec)
        assert secret not in out and "***" in out


# --- redaction ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (
            "postgresql://gekko:s3cr%40t@db:5432/g?sslmode=require",
            "postgresql://gekko:***@db:5432/g?sslmode=require",
        ),
        ("postgres://u:pw@h/d", "postgres://u:***@h/d"),
        ("cannot reach redis://:hunter22@r:6379/0 now", "cannot reach redis://:***@r:6379/0 now"),
        ("rediss://user:p@ss@host/0", "rediss://user:***@host/0"),
        ("see https://bot:tok123@example.com/x", "see https://bot:***@example.com/x"),
        ("redis+cluster://a:b@n1:7000", "redis+cluster://a:***@n1:7000"),
        (
            "host=db user=gekko password=s3cret dbname=g",
            "host=db user=gekko password=*** dbname=g",
        ),
        ("password='a b c' host=x", "password='***' host=x"),
        ('api_key = "abcd1234"', 'api_key = "***"'),
        ('{"password": "x1", "secret_token":"tt"}', '{"password": "***", "secret_token":"***"}'),
        ("PGPASSWORD=foo psql", "PGPASSWORD=*** psql"),
        # not secrets: no password in the URL, a file path key, a user name
        ("redis://user@host/0", "redis://user@host/0"),
        ("postgresql://postgres:@/db?host=/tmp/x", "postgresql://postgres:@/db?host=/tmp/x"),
        ('password_file = "/run/credentials/pg"', 'password_file = "/run/credentials/pg"'),
        ('password authentication failed for user "gekko"', None),
    ],
)
def test_redact(text: str, shown: str | None) -> None:
    assert redact(text) == (text if shown is None else shown)
    assert redact(redact(text)) == redact(text)  # idempotent


def test_a_config_error_never_echoes_a_password(tmp_path: Path) -> None:
    path = _config(tmp_path, mode=f"mysql://gekko:{PW}@db/gekko")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.key == "storage.postgres.mode" and PW not in str(e.value)


def test_the_shipped_config_has_nothing_to_redact() -> None:
    text = (ROOT / "config.toml").read_text()
    assert redact(text) == text  # so its digest is the file's sha256


def test_the_config_cached_in_redis_is_redacted(redis_url: str, engine_id: str) -> None:
    from ops.store.redis_store import ParamCache, client_for_url, key

    text = f'[storage.postgres]\nmode = "postgresql://gekko:{PW}@db/g"\npassword = "{PW}"\n'
    client = client_for_url(redis_url)
    try:
        ParamCache(client).put_config(engine_id, text)
        raw = client.hgetall(key(engine_id, "config"))
        assert PW.encode() not in b"".join([*raw.keys(), *raw.values()])
        stored, digest = ParamCache(client).get_config(engine_id)
        assert 'mode = "postgresql://gekko:***@db/g"' in stored and 'password = "***"' in stored
        import hashlib

        assert digest == hashlib.sha256(stored.encode()).hexdigest()
    finally:
        client.delete(key(engine_id, "config"))
        client.close()


def test_audit_details_are_redacted() -> None:
    from ops.store.audit import audit_event

    ev = audit_event("alice", "x", dsn=f"postgresql://u:{PW}@h/d", password=PW, n=1)
    assert PW not in ev.detail
    assert msgspec.json.decode(ev.detail) == {
        "dsn": "postgresql://u:***@h/d",
        "password": "***",
        "n": 1,
    }


def test_the_training_command_recorded_with_a_model_has_no_password() -> None:
    import argparse

    from ops.model_cmds import _canonical_command

    args = argparse.Namespace(source="postgres", dsn=f"postgresql://u:{PW}@h/d", epochs=3)
    cmd = _canonical_command(args)
    assert PW not in cmd and "--dsn postgresql://u:***@h/d" in cmd
