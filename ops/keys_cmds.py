"""``gekko keys add | list | rotate | remove``: the venue API keys in the keystore (ops/keystore.py).

Why commands and not an editor: the keystore is ciphertext; these decrypt it, change one entry,
and write it back atomically under a lock, so a key is never in a file in the clear. The secrets
are asked for without echo (or read from a 0600 TOML file with ``api_key`` / ``api_secret`` /
``api_password``, the old ``credentials_file`` format: ``--from-file`` moves one in). ``list``
shows names, venues, accounts, permissions and dates, never a secret. Every change is an audit
record (``keys.add``, ``keys.rotate``, ``keys.remove``, ``keys.passphrase``) naming the entry and
the OS user; a refused one too (``keys.refused``). Access: the file is its owner's alone (0600);
whoever cannot read it cannot change it.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.cli_common import load_config_or_exit
from ops.keystore import (
    KdfParams,
    KeyEntry,
    KeystoreError,
    find,
    load,
    locked,
    now,
    passphrase,
    save,
)

__all__ = ["add_parsers"]


def _path(args: argparse.Namespace, cfg: Any) -> Path:
    path = args.keystore or cfg.keystore.file(cfg.source_path)
    if not path:
        raise KeystoreError("no keystore: set [keystore] path in the config, or give --keystore")
    return Path(path)


def _audit(cfg: Any, action: str, **detail: Any) -> None:
    from ops.store.audit import audit_event, os_user, record_outside_run

    ev = audit_event(os_user(), action, engine_id=cfg.engine.id, **detail)
    record_outside_run(cfg, [ev], f"the {action} record")


def _secrets(args: argparse.Namespace) -> tuple[str, str, str]:
    """(api_key, api_secret, api_password): from ``--from-file`` or asked without echo."""
    if args.from_file:
        import msgspec

        from ops.secrets import SecretError, read_secret_file, register

        try:
            raw = msgspec.toml.decode(read_secret_file(args.from_file, "--from-file"))
        except (SecretError, msgspec.DecodeError) as exc:
            raise KeystoreError(f"--from-file {args.from_file}: {exc}") from None
        vals = tuple(str(raw.get(k, "")) for k in ("api_key", "api_secret", "api_password"))
        register(v for v in vals if v)
        return vals  # type: ignore[return-value]
    if not sys.stdin.isatty():
        raise KeystoreError("no terminal to ask for the key on: use --from-file FILE (mode 0600)")
    key = getpass.getpass("API key: ")
    secret = getpass.getpass("API secret: ")
    password = getpass.getpass("API passphrase (Coinbase legacy; Enter for none): ")
    return key, secret, password


def _open(args: argparse.Namespace, cfg: Any, *, new_ok: bool = False) -> tuple[Path, str, list]:
    """(path, passphrase, entries); a missing file is empty only when ``new_ok`` (add)."""
    path = _path(args, cfg)
    if not path.exists():
        if not new_ok:
            raise KeystoreError(f"keystore {path} does not exist: gekko keys add creates it")
        secret, _ = passphrase(cfg.keystore.passphrase_file, confirm=True)
        return path, secret, []
    secret, _ = passphrase(cfg.keystore.passphrase_file)
    return path, secret, load(path, secret)


def cmd_add(args: argparse.Namespace, cfg: Any) -> int:
    path = _path(args, cfg)
    with locked(path):
        path, secret, entries = _open(args, cfg, new_ok=True)
        if any(e.name == args.name for e in entries):
            raise KeystoreError(f"keystore {path} already has {args.name!r}: rotate or remove it")
        key, api_secret, pw = _secrets(args)
        entry = KeyEntry(
            name=args.name,
            venue=args.venue,
            account=args.account,
            permissions=args.permissions,
            allow_withdraw=args.allow_withdraw,
            api_key=key,
            api_secret=api_secret,
            api_password=pw,
            created=now(),
        )
        save(path, secret, [*entries, entry], _kdf(args))
    _audit(cfg, "keys.add", **{"entry": args.name, "venue": args.venue, "file": str(path)})
    print(f"keystore {path}: added {args.name} ({args.venue}, {args.permissions})")
    return 0


def _kdf(args: argparse.Namespace) -> KdfParams:
    return KdfParams(memory_kib=args.kdf_memory_kib) if args.kdf_memory_kib else KdfParams()


def cmd_list(args: argparse.Namespace, cfg: Any) -> int:
    _, _, entries = _open(args, cfg)
    rows = [e.public() for e in entries]
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("keystore is empty")
    for r in rows:
        when = time.strftime("%Y-%m-%d", time.gmtime(r["rotated"] or r["created"]))
        flags = " ALLOW-WITHDRAW" if r["allow_withdraw"] else ""
        print(
            f"{r['name']:<20} {r['venue']:<12} {r['account'] or '-':<12} "
            f"{r['permissions']:<6} since {when}{flags}"
        )
    return 0


def cmd_rotate(args: argparse.Namespace, cfg: Any) -> int:
    path = _path(args, cfg)
    with locked(path):
        path, secret, entries = _open(args, cfg)
        if args.passphrase:  # a new passphrase for the whole file (fresh salt and nonce)
            new, _ = passphrase("", env={}, prompt=_prompt_new(args), confirm=True)
            save(path, new, entries, _kdf(args))
            what: dict[str, Any] = {"passphrase": True}
        else:
            if not args.name:
                raise KeystoreError("gekko keys rotate NAME (or --passphrase)")
            old = find(entries, args.name, path)
            key, api_secret, pw = _secrets(args)
            import msgspec

            new_entry = msgspec.structs.replace(
                old, api_key=key, api_secret=api_secret, api_password=pw, rotated=now()
            )
            new_entry.__post_init__()
            save(path, secret, [new_entry if e is old else e for e in entries], _kdf(args))
            what = {"entry": args.name}
    _audit(cfg, "keys.passphrase" if args.passphrase else "keys.rotate", file=str(path), **what)
    print(f"keystore {path}: rotated {'the passphrase' if args.passphrase else args.name}")
    return 0


def _prompt_new(args: argparse.Namespace) -> Callable[[str], str]:
    """The new passphrase: ``--new-passphrase-file`` (0600), else asked twice."""
    if args.new_passphrase_file:
        from ops.keystore import _read_file

        value = _read_file(Path(args.new_passphrase_file), "--new-passphrase-file")
        return lambda _prompt: value
    if not sys.stdin.isatty():
        raise KeystoreError(
            "no terminal to ask for the new passphrase on (use --new-passphrase-file)"
        )
    return lambda prompt: getpass.getpass("new " + prompt)


def cmd_remove(args: argparse.Namespace, cfg: Any) -> int:
    path = _path(args, cfg)
    with locked(path):
        path, secret, entries = _open(args, cfg)
        gone = find(entries, args.name, path)
        save(path, secret, [e for e in entries if e is not gone], _kdf(args))
    _audit(cfg, "keys.remove", entry=args.name, file=str(path))
    print(f"keystore {path}: removed {args.name}")
    return 0


def _run(fn: Callable[[argparse.Namespace, Any], int]) -> Callable[[argparse.Namespace], int]:
    def go(args: argparse.Namespace) -> int:
        cfg = load_config_or_exit(args.config)
        try:
            return fn(args, cfg)
        except KeystoreError as exc:
            print(f"gekko: {exc}", file=sys.stderr)
            _audit(cfg, "keys.refused", command=f"keys {args.keys_command}", reason=str(exc))
            return 2

    return go


def add_parsers(
    sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]
) -> None:
    keys = sub.add_parser("keys", help="venue API keys in the encrypted keystore")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_config(p)
        p.add_argument(
            "--keystore", default="", help="the keystore file (default: [keystore] path)"
        )
        p.add_argument(
            "--kdf-memory-kib",
            type=int,
            default=0,
            help=argparse.SUPPRESS,  # Argon2id memory of a rewrite (default 64 MiB)
        )
        return p

    add = common(ksub.add_parser("add", help="add a venue's API key (asked without echo)"))
    add.add_argument("name", help="the entry's name ([[venues]] keystore_entry = NAME)")
    add.add_argument("--venue", required=True, help="the [[venues]] name or kind it is for")
    add.add_argument("--account", default="", help="the venue account or portfolio (a label)")
    add.add_argument("--permissions", choices=("trade", "read"), default="trade")
    add.add_argument(
        "--allow-withdraw",
        action="store_true",
        help="accept the key even if the venue says it can withdraw (not recommended)",
    )
    add.add_argument("--from-file", default="", help="a 0600 TOML file with api_key, api_secret")
    add.set_defaults(func=_run(cmd_add))

    ls = common(ksub.add_parser("list", help="the entries (never a secret)"))
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_run(cmd_list))

    rot = common(ksub.add_parser("rotate", help="replace an entry's key, or the passphrase"))
    rot.add_argument("name", nargs="?", default="", help="the entry whose key is replaced")
    rot.add_argument("--from-file", default="", help="a 0600 TOML file with the new key")
    rot.add_argument("--passphrase", action="store_true", help="change the passphrase instead")
    rot.add_argument("--new-passphrase-file", default="", help="the new passphrase (0600 file)")
    rot.set_defaults(func=_run(cmd_rotate))

    rm = common(ksub.add_parser("remove", help="delete an entry"))
    rm.add_argument("name")
    rm.set_defaults(func=_run(cmd_remove))
