"""The keystore (ops/keystore.py): encryption at rest, the file's mode, the passphrase's sources,
``gekko keys`` and the venue keys it gives (ops/venue_keys.py). Fast: Argon2id at the floor."""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import msgspec
import pytest

from ops import keystore as ks
from ops.keystore import KdfParams, KeyEntry, KeystoreError
from ops.secrets import redact
from tests.conftest import ROOT
from tests.test_preflight import set_key

FAST = KdfParams(iterations=2, lanes=1, memory_kib=ks.MIN_MEMORY_KIB)
PASS = "correct horse battery staple"
BASE = (ROOT / "config.toml").read_text()


def _entry(name: str = "bn-main", **kw: object) -> KeyEntry:
    base = {
        "name": name,
        "venue": "bn",
        "api_key": "AK" + uuid.uuid4().hex,
        "api_secret": "SK" + uuid.uuid4().hex,
    }
    return KeyEntry(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_ambient_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ks.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_a_saved_keystore_is_ciphertext_0600_and_loads_back_only_with_its_passphrase(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.json"
    e = _entry(account="sub-1", permissions="read")
    ks.save(path, PASS, [e], FAST)
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_bytes()
    assert e.api_key.encode() not in raw and e.api_secret.encode() not in raw
    assert b"bn-main" not in raw  # names and venues are encrypted too
    head = json.loads(raw)
    assert head["kdf"]["name"] == "argon2id" and head["kdf"]["memory_kib"] == FAST.memory_kib
    assert head["cipher"]["name"] == "aes-256-gcm"
    assert ks.load(path, PASS) == [e]
    with pytest.raises(KeystoreError, match="wrong passphrase, or the file was altered"):
        ks.load(path, PASS + "x")
    ks.save(path, PASS, [e], FAST)  # every write: a fresh salt and nonce
    again = json.loads(path.read_bytes())
    assert again["kdf"]["salt"] != head["kdf"]["salt"]
    assert again["cipher"]["nonce"] != head["cipher"]["nonce"]
    assert "api_secret" not in repr(e) and e.api_secret not in repr(e)
    assert redact(f"x {e.api_secret} y") == "x *** y"  # loaded: registered as a secret


def _rewrite(path: Path, change: object) -> None:
    head = json.loads(path.read_bytes())
    change(head)  # type: ignore[operator]
    path.write_text(json.dumps(head))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda h: h["kdf"].update(iterations=3), "wrong passphrase, or the file was altered"),
        (lambda h: h["kdf"].update(lanes=2), "wrong passphrase, or the file was altered"),
        (
            lambda h: h.update(
                ciphertext=base64.b64encode(
                    bytes([base64.b64decode(h["ciphertext"])[0] ^ 1])
                    + base64.b64decode(h["ciphertext"])[1:]
                ).decode()
            ),
            "wrong passphrase, or the file was altered",
        ),
        (lambda h: h["kdf"].update(memory_kib=1024), "below the floor"),
        (lambda h: h["kdf"].update(name="pbkdf2"), "only argon2id and aes-256-gcm"),
        (lambda h: h.update(version=2), "version 2 unknown"),
        (lambda h: h["cipher"].update(nonce="!!"), "nonce is not base64"),
    ],
)
def test_an_altered_header_or_ciphertext_is_refused(
    tmp_path: Path, change: object, problem: str
) -> None:
    path = tmp_path / "keys.json"
    ks.save(path, PASS, [_entry()], FAST)
    _rewrite(path, change)
    with pytest.raises(KeystoreError, match=problem):
        ks.load(path, PASS)


def test_a_keystore_group_or_others_can_read_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ks.save(path, PASS, [_entry()], FAST)
    path.chmod(0o640)
    with pytest.raises(
        KeystoreError, match=r"accessible by group or others \(mode 0640\).*chmod 600"
    ):
        ks.load(path, PASS)
    path.chmod(0o600)
    assert len(ks.load(path, PASS)) == 1


def test_the_passphrase_comes_from_one_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "pass"
    f.write_text(PASS + "\n")
    f.chmod(0o600)
    env = {ks.PASSPHRASE_ENV: "from-the-env-1234"}
    assert ks.passphrase("", env) == ("from-the-env-1234", ks.PASSPHRASE_ENV)
    assert ks.passphrase(str(f), {}) == (PASS, f"file {f}")
    with pytest.raises(KeystoreError, match="give one"):
        ks.passphrase(str(f), env)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / ks.CREDENTIAL_NAME).write_text("systemd-credential-pass")
    (creds / ks.CREDENTIAL_NAME).chmod(0o600)
    got = ks.passphrase("", {"CREDENTIALS_DIRECTORY": str(creds)})
    assert got[0] == "systemd-credential-pass" and got[1].startswith("systemd credential")
    f.chmod(0o644)
    with pytest.raises(KeystoreError, match="accessible by group or others"):
        ks.passphrase(str(f), {})
    # no source: a prompt where one may ask, else a refusal naming the sources
    assert ks.passphrase("", {}, prompt=lambda _: "typed-pass")[0] == "typed-pass"
    with pytest.raises(KeystoreError, match="never prompts.*GEKKO_KEYSTORE_PASSPHRASE"):
        ks.passphrase("", {}, prompt=lambda _: "typed-pass", can_prompt=False)
    answers = iter(["first-passphrase-1", "other-passphrase-2"])
    with pytest.raises(KeystoreError, match="the two entries differ"):
        ks.passphrase("", {}, prompt=lambda _: next(answers), confirm=True)
    with pytest.raises(KeystoreError, match="too short .at least 12 characters"):
        ks.passphrase("", {ks.PASSPHRASE_ENV: "short"}, confirm=True)
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115 - no terminal
    with pytest.raises(KeystoreError, match="no terminal to ask on"):
        ks.passphrase("", {})


# --- gekko keys ---------------------------------------------------------------------------------
def _config(tmp_path: Path, extra: str = "") -> Path:
    text = BASE.replace('id = "gekko"', 'id = "kt' + uuid.uuid4().hex[:6] + '"', 1)
    text = text.replace('var_dir = "var"', f'var_dir = "{tmp_path / "var"}"', 1)
    text = set_key(text, "storage.postgres", 'mode = "off"')  # audit: says it is not recorded
    cfg = tmp_path / "gekko.toml"
    cfg.write_text(text + '\n[keystore]\npath = "keys.json"\n' + extra)
    return cfg


def _keyfile(tmp_path: Path, key: str, secret: str) -> Path:
    f = tmp_path / f"{key}.toml"
    f.write_text(f'api_key = "{key}"\napi_secret = "{secret}"\n')
    f.chmod(0o600)
    return f


def _gekko(*argv: str) -> int:
    from ops.cli import main

    return main([*argv, "--kdf-memory-kib", str(ks.MIN_MEMORY_KIB)])


def test_gekko_keys_add_list_rotate_remove_and_list_never_prints_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(ks.PASSPHRASE_ENV, PASS)
    cfg = str(_config(tmp_path))
    k1, s1 = "key-one-" + uuid.uuid4().hex, "secret-one-" + uuid.uuid4().hex
    f1 = _keyfile(tmp_path, k1, s1)
    add = ["keys", "add", "bn-main", "--venue", "bn", "--account", "desk-7", "--config", cfg]
    assert _gekko(*add, "--from-file", str(f1)) == 0
    assert _gekko(*add, "--from-file", str(f1)) == 2  # the name is taken
    assert "already has 'bn-main'" in capsys.readouterr().err
    path = tmp_path / "keys.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [e.api_key for e in ks.load(path, PASS)] == [k1]

    assert _gekko("keys", "list", "--config", cfg, "--json") == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out)
    assert row["name"] == "bn-main" and row["account"] == "desk-7"
    assert row["permissions"] == "trade" and row["allow_withdraw"] is False
    assert k1 not in out and s1 not in out

    k2, s2 = "key-two-" + uuid.uuid4().hex, "secret-two-" + uuid.uuid4().hex
    rot = ["keys", "rotate", "bn-main", "--config", cfg]
    assert _gekko(*rot, "--from-file", str(_keyfile(tmp_path, k2, s2))) == 0
    (e,) = ks.load(path, PASS)
    assert (e.api_key, e.api_secret, e.account) == (k2, s2, "desk-7") and e.rotated >= e.created

    new = tmp_path / "newpass"
    new.write_text("a brand new passphrase")
    new.chmod(0o600)
    assert (
        _gekko("keys", "rotate", "--passphrase", "--new-passphrase-file", str(new), "--config", cfg)
        == 0
    )
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        ks.load(path, PASS)
    assert ks.load(path, "a brand new passphrase")[0].api_key == k2
    assert _gekko("keys", "list", "--config", cfg) == 2  # the old passphrase: refused
    assert "wrong passphrase" in capsys.readouterr().err
    monkeypatch.setenv(ks.PASSPHRASE_ENV, "a brand new passphrase")
    assert _gekko("keys", "remove", "bn-main", "--config", cfg) == 0
    assert ks.load(path, "a brand new passphrase") == []
    everything = capsys.readouterr()
    for secret in (k1, s1, k2, s2):
        assert secret not in everything.out + everything.err


# --- the venue's keys from the keystore ----------------------------------------------------------
def _venue(extra: str = "") -> object:
    from ops.venue_config import BinanceUsVenue

    return msgspec.convert({"name": "bn"} | msgspec.toml.decode(extra), BinanceUsVenue)


def test_a_venue_naming_a_keystore_entry_gets_its_keys_and_rules(tmp_path: Path) -> None:
    from ops.config import ConfigError, KeystoreSection
    from ops.venue_keys import load_key

    path = tmp_path / "keys.json"
    e = _entry(allow_withdraw=True)
    ks.save(path, PASS, [e, _entry("cb-main", venue="coinbase")], FAST)
    section = KeystoreSection(path="keys.json")
    env = {ks.PASSPHRASE_ENV: PASS}
    got = load_key(_venue('keystore_entry = "bn-main"'), tmp_path / "c.toml", env, section)
    assert got is not None
    creds, rules = got
    assert (creds.api_key, creds.secret) == (e.api_key, e.api_secret)
    assert (rules.name, rules.permissions, rules.allow_withdraw) == ("bn-main", "trade", True)
    cases = [
        ('keystore_entry = "cb-main"', env, section, "is for venue 'coinbase', not 'bn'"),
        ('keystore_entry = "nope"', env, section, "has no key 'nope' (it has: bn-main, cb-main)"),
        ('keystore_entry = "bn-main"', {}, section, "gekko run never prompts"),
        ('keystore_entry = "bn-main"', env, KeystoreSection(), "needs [keystore] path"),
        (
            'keystore_entry = "bn-main"',
            env | {"GEKKO_BN_API_KEY": "k" * 8, "GEKKO_BN_API_SECRET": "s" * 8},
            section,
            "keys in both the environment (GEKKO_BN_API_KEY) and keystore_entry: give one",
        ),
    ]
    for extra, env_, sec, problem in cases:
        with pytest.raises(ConfigError) as err:
            load_key(_venue(extra), tmp_path / "c.toml", env_, sec)
        assert err.value.key == "venues[bn]" and problem in err.value.problem, err.value


def test_only_exec_starts_with_the_key_variables() -> None:
    from ops.venue_keys import worker_env

    env = {
        "PATH": "/bin",
        "GEKKO_BN_API_KEY": "k",
        "GEKKO_BN_API_SECRET": "s",
        "GEKKO_MY_VENUE_API_PASSWORD": "p",
        ks.PASSPHRASE_ENV: "pp",
        "GEKKO_RUN_ID": "3",
    }
    assert worker_env(env, "exec") == env
    for w in ("feed", "strategy", "risk", "recorder", "bridge", "infer"):
        assert worker_env(env, w) == {"PATH": "/bin", "GEKKO_RUN_ID": "3"}


def test_secrets_of_a_transient_block_are_forgotten_after_it() -> None:
    from ops.secrets import register, transient

    kept, used = "kept-" + uuid.uuid4().hex, "used-once-" + uuid.uuid4().hex
    register([kept])
    with transient():
        register([used, kept])
        assert redact(used) == "***"
    assert redact(used) == used and redact(kept) == "***"
