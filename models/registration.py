"""What the ``models`` table stores about a model directory, taken from its meta.json.

meta.json beside model.onnx is the registry's truth; the database row is a queryable copy of it
(which versions exist, what made them, how they scored) that outlives the files on one host.
One function builds that copy, so ``gekko train`` / ``gekko export`` (writing directly) and the
infer process (through the recorder) store exactly the same thing.

Only ``engine.messages`` is imported: infer builds the message here without a database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from engine.messages import ModelRegistered

#: meta.json keys kept in ``params``: what produced the model (not how it scored)
PARAM_KEYS = (
    "architecture",
    "features",
    "target",
    "input_size",
    "horizon",
    "quantiles",
    "bar_seconds",
    "hyperparameters",
    "training",  # data description and sha256, seed, the full command, losses
    "onnx_sha256",
)
#: a row stays small enough for a ring frame (metrics tables are a few kB)
MAX_JSON = 60_000


def _json(obj: Any) -> str:
    """JSON text for a jsonb column: msgspec writes a NaN loss as null (the json module would
    write a NaN token, which PostgreSQL refuses); anything unusual becomes its string."""
    return msgspec.json.encode(obj, enc_hook=str).decode()


def model_record(model_dir: str | Path, meta: dict[str, Any]) -> dict[str, str]:
    """The ``models`` row of a model directory: name, version, artifact (the ONNX file's
    absolute path), created (ISO, from meta.json), params and metrics (JSON text)."""
    params = {k: meta[k] for k in PARAM_KEYS if k in meta}
    metrics = meta.get("metrics") or {}
    p, m = _json(params), _json(metrics)
    if len(p) > MAX_JSON:
        p = _json({k: params[k] for k in params if k != "training"} | {"truncated": True})
    if len(m) > MAX_JSON:
        keys = sorted(metrics) if isinstance(metrics, dict) else []  # a list may mix types
        m = _json({"truncated": True, "keys": keys})
    return {
        "name": str(meta.get("name", "")),
        "version": str(meta.get("version", "")),
        "artifact": str((Path(model_dir) / "model.onnx").resolve()),
        "created": str(meta.get("created", "")),
        "params": p,
        "metrics": m,
    }


def registered_message(
    model_dir: str | Path,
    meta: dict[str, Any],
    action: str,
    actor: str,
    old_version: str = "",
) -> ModelRegistered:
    """The message infer publishes so the recorder upserts the model and audits ``action``."""
    r = model_record(model_dir, meta)
    return ModelRegistered(
        r["name"],
        r["version"],
        r["artifact"],
        r["created"],
        r["params"],
        r["metrics"],
        action,
        actor,
        time.time_ns(),
        old_version,
    )
