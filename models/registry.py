"""Model registry: ``<root>/<name>/<version>/`` holding ``model.onnx`` + ``meta.json``.

No torch here: the serving side reads the registry too. A model directory is the unit that is
served, shipped and compared; meta.json records what produced it (hyper-parameters, the hash of
the training data, the seed and the exact command) and how it scored (walk-forward metrics), so
a number in a report can be traced to the bytes that made it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

FORMAT = 1
DEFAULT_ROOT = Path("var/models")
SHIPPED = Path(__file__).resolve().parent / "shipped" / "default"
REQUIRED = (
    "format",
    "name",
    "version",
    "architecture",
    "features",
    "target",
    "input_size",
    "horizon",
    "quantiles",
    "bar_seconds",
    "scaler",
    "hyperparameters",
    "training",
    "metrics",
    "onnx_sha256",
    "created",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RegistryError(ValueError):
    """A model directory that cannot be used; the message names the directory and the problem."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def check_name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise RegistryError(f"{what} {value!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return value


def next_version(root: str | Path, name: str) -> str:
    """``v1``, ``v2``, ...: one more than the highest ``v<N>`` already under ``root/name``."""
    d = Path(root) / check_name("model name", name)
    nums = [int(p.name[1:]) for p in d.glob("v*") if p.name[1:].isdigit()] if d.exists() else []
    return f"v{max(nums, default=0) + 1}"


def write_meta(model_dir: str | Path, meta: dict) -> Path:
    """Validate and write meta.json (atomically: a reader never sees half a file)."""
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise RegistryError(f"{model_dir}: meta.json lacks {missing}")
    p = Path(model_dir) / "meta.json"
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    tmp.replace(p)
    return p


def read_meta(model_dir: str | Path) -> dict:
    """Read and check meta.json of a model directory (format, required keys, ONNX hash)."""
    d = Path(model_dir)
    p = d / "meta.json"
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError:
        raise RegistryError(f"{d}: no meta.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RegistryError(f"{p}: not valid JSON ({exc})") from None
    except RecursionError:  # json's C parser recurses: a deeply nested document
        raise RegistryError(f"{p}: not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise RegistryError(f"{p}: not a JSON object")
    if meta.get("format") != FORMAT:
        raise RegistryError(f"{p}: format {meta.get('format')!r}, expected {FORMAT}")
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise RegistryError(f"{p}: missing keys {missing}")
    return meta


def verify_onnx_hash(model_dir: str | Path, meta: dict) -> None:
    """Raise if model.onnx is not the file meta.json describes (truncated, replaced)."""
    onnx = Path(model_dir) / "model.onnx"
    if not onnx.exists():
        raise RegistryError(f"{model_dir}: no model.onnx")
    if file_sha256(onnx) != meta["onnx_sha256"]:
        raise RegistryError(f"{onnx}: sha256 differs from meta.json (modified or truncated)")


def _get(d: object, *path: str) -> object:
    """``d[path[0]][path[1]]...`` of a meta.json, None where a level is absent or no object:
    a listing shows what it can of a hand-edited file rather than failing on it."""
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d


def list_models(root: str | Path = DEFAULT_ROOT, include_shipped: bool = True) -> list[dict]:
    """One summary per model directory under ``root`` (and the shipped default), sorted."""
    dirs = sorted(p.parent for p in Path(root).glob("*/*/meta.json")) if Path(root).exists() else []
    if include_shipped and (SHIPPED / "meta.json").exists():
        dirs.insert(0, SHIPPED)
    out = []
    for d in dirs:
        try:
            meta = read_meta(d)
        except RegistryError as exc:
            out.append({"path": str(d), "error": str(exc)})
            continue
        table = _get(meta, "metrics", "table") or []
        mine = (
            next(
                (r for r in table if isinstance(r, dict) and r.get("name") == meta["architecture"]),
                None,
            )
            if isinstance(table, list)
            else None
        )
        out.append(
            {
                "path": str(d),
                "name": meta["name"],
                "version": meta["version"],
                "architecture": meta["architecture"],
                "input_size": meta["input_size"],
                "horizon": meta["horizon"],
                "bar_seconds": meta["bar_seconds"],
                "data": _get(meta, "training", "data") or "",
                "created": meta["created"],
                "mase": mine.get("mase") if mine else None,
                "dir_acc": mine.get("dir_acc") if mine else None,
            }
        )
    return out
