"""The model registry in PostgreSQL: ``gekko train`` / ``gekko export`` register what they
wrote, ``gekko models list --db`` reads it back.

The files (``model.onnx`` + ``meta.json``) are the registry's truth and are always written
first; the ``models`` row is their queryable copy (``models.registration`` builds it, the same
way infer does for the models it serves). So storage off or a dead database cost one line on
stderr, never the model or the command's exit status.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def register_model_dir(config_path: str, model_dir: str | Path, action: str) -> bool:
    """Upsert ``model_dir`` into ``models`` with a ``model.<action>`` audit row (actor: the OS
    user), in the database of the config at ``config_path``. Returns stored?"""
    from models.registration import registered_message
    from models.registry import RegistryError, read_meta
    from ops.config import ConfigError, load_config
    from ops.store.audit import os_user, record_outside_run

    try:
        cfg = load_config(config_path)
    except (ConfigError, OSError) as exc:
        print(f"gekko: model not registered in PostgreSQL: {exc}", file=sys.stderr)
        return False
    try:
        msg = registered_message(model_dir, read_meta(model_dir), action, os_user())
    except RegistryError as exc:
        print(f"gekko: model not registered in PostgreSQL: {exc}", file=sys.stderr)
        return False
    stored = record_outside_run(cfg, [msg], f"model {msg.name} {msg.version}")
    if stored:
        print(f"registered model {msg.name} {msg.version} in PostgreSQL")
    return stored


def _score(params: dict, metrics: dict) -> tuple[Any, Any]:
    """(MASE, directional accuracy) of the model's own row of its walk-forward table."""
    arch = params.get("architecture")
    table = metrics.get("table") or []
    mine = next((r for r in table if isinstance(r, dict) and r.get("name") == arch), None)
    return (mine.get("mase"), mine.get("dir_acc")) if mine else (None, None)


def db_models(conn: Any) -> list[dict[str, Any]]:
    """Every stored model version, in the shape of ``models.registry.list_models``."""
    rows = conn.execute(
        "SELECT name, version, created_at, artifact, params, metrics FROM models"
        " ORDER BY name, created_at, version"
    ).fetchall()
    out = []
    for name, version, created, artifact, params, metrics in rows:
        params = params if isinstance(params, dict) else {}
        metrics = metrics if isinstance(metrics, dict) else {}
        mase, dir_acc = _score(params, metrics)
        training = params.get("training") if isinstance(params.get("training"), dict) else {}
        out.append(
            {
                "path": artifact,
                "name": name,
                "version": version,
                "architecture": params.get("architecture", "?"),
                "input_size": params.get("input_size", ""),
                "horizon": params.get("horizon", ""),
                "bar_seconds": params.get("bar_seconds", ""),
                "data": training.get("data", ""),
                "created": created.isoformat(timespec="seconds") if created else "",
                "mase": mase,
                "dir_acc": dir_acc,
            }
        )
    return out
