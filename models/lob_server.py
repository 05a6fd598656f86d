"""The current good micro model of ``[inference] micro_model_dir``, hot-swapped when it changes.

The bar model's ``models.serving.ModelServer`` in small: the source is a model directory
(re-read when its files change) or a directory of version sub-directories (the newest serves).
A new version is loaded off to the side (``MicroModel``: format, features, the file's sha256
against meta.json, so a half-written or half-copied file fails there and is not loaded),
trial-run, and checked against the configuration and the running state
(``models.lob_guard``); only then does it replace the current one. A refused version is
remembered until its files change (a copy still in progress is retried when it is complete)
and the last good model serves on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from engine.messages import ModelRegistered, ModelRejected, ModelSwapped
from models.lob_export import MicroModel, MicroModelError, micro_version
from models.lob_guard import MicroSpec, misfits, model_tick, state_misfits
from models.registration import registered_message
from models.serving import _signature, _version_key

log = logging.getLogger("gekko.models.lob_server")


@dataclass
class MicroSwap:
    """What one poll did: ``kind`` is "loaded", "swapped" or "rejected"."""

    kind: str
    path: Path
    version: str
    old_version: str = ""
    reason: str = ""


class MicroServer:
    """``poll()`` -> a ``MicroSwap`` when something happened; ``current`` serves."""

    def __init__(self, source: str | Path, spec: MicroSpec) -> None:
        self.source = Path(source)
        self.spec = spec  # the running model's levels / coalescing pinned once one serves
        self.current: MicroModel | None = None
        self._sig: tuple[Path, tuple[int, ...] | None] | None = None
        self._rejected: dict[Path, tuple[int, ...] | None] = {}
        self._said_none = False

    def _candidate(self) -> Path | None:
        if (self.source / "meta.json").exists():
            return self.source
        try:
            versions = [p for p in self.source.iterdir() if (p / "meta.json").exists()]
        except OSError:
            return None
        good = [p for p in versions if self._rejected.get(p, ()) != _signature(p)]
        return max(good, key=_version_key) if good else None

    def poll(self) -> MicroSwap | None:
        """Look for a new version; load, check and swap it in. Never raises for a bad model."""
        cand = self._candidate()
        if cand is None:
            if self.current is None and not self._rejected and not self._said_none:
                self._said_none = True
                log.error("inference: no micro model at %s (model.onnx + meta.json)", self.source)
            return None
        sig = (cand, _signature(cand))
        if sig == self._sig or (cand in self._rejected and self._rejected[cand] == sig[1]):
            return None
        try:
            model = MicroModel(cand)
            model.trial()
            self._check(model)
        except MicroModelError as exc:
            return self._reject(cand, sig[1], str(exc))
        old = self.current
        self.current, self._sig = model, sig
        self.spec = self.spec.running(model.meta)
        self._rejected.pop(cand, None)
        if model_tick(model.meta) is None:
            log.info("inference: micro model %s: its tick is not in meta.json (not checked)", cand)
        if old is None:
            log.info("inference: micro model %s from %s", model.version, cand)
            return MicroSwap("loaded", cand, model.version)
        log.warning("inference: hot-swapped micro model %s -> %s", old.version, model.version)
        return MicroSwap("swapped", cand, model.version, old.version)

    def _check(self, model: MicroModel) -> None:
        why = state_misfits(model.meta, self.spec)
        soft = misfits(model.meta, self.spec)
        if soft and not why and self.spec.mismatch == "warn":
            log.warning(
                "inference: micro model %s does not fit: %s; serving it anyway ([inference] "
                'mismatch = "warn")',
                model.version,
                "; ".join(soft),
            )
            soft = []
        if why or soft:
            raise MicroModelError(
                f"{model.path}: does not fit the running configuration: " + "; ".join(why + soft)
            )

    def _reject(self, cand: Path, sig: tuple[int, ...] | None, reason: str) -> MicroSwap:
        self._rejected[cand] = sig
        if self.current is None:
            log.error("inference: micro model refused: %s", reason)
        else:
            log.error(
                "inference: refusing the new micro model: %s; still serving %s",
                reason,
                self.current.version,
            )
        return MicroSwap("rejected", cand, _version_of(cand), reason=reason)


#: the ``model_name`` of a micro model's ``ModelSwapped`` and its ``models`` row
NAME = "micro"


def swap_message(ev: MicroSwap, ts: int) -> ModelSwapped | ModelRejected:
    """What a poll's event publishes on the ``forecasts`` ring (as the bar model's)."""
    if ev.kind == "rejected":
        return ModelRejected(str(ev.path), ev.version, ev.reason[:2000], ts)
    return ModelSwapped(NAME, ev.old_version, ev.version, str(ev.path), ts)


def registration(model: MicroModel, old_version: str = "") -> ModelRegistered:
    """The ``ModelRegistered`` the recorder turns into the micro model's ``models`` row and its
    ``model.serve`` / ``model.swap`` audit row (name "micro", version "micro:...")."""
    meta = {**model.meta, "name": NAME, "version": model.version}
    return registered_message(
        model.path, meta, "swap" if old_version else "serve", "infer", old_version
    )


def _version_of(d: Path) -> str:
    """The version a refused directory's meta.json names (its directory name if unreadable)."""
    try:
        return micro_version(json.loads((d / "meta.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return d.name
