"""The micro direction model in the infer process: start, hot swap, drift, as messages.

``[inference] micro_model_dir`` is polled on the bar model's timer (``poll_model_s``). A new
version is loaded, trial-run and checked (``models.lob_server``, ``models.lob_guard``) and
served on the running books and feature states (``MicroForecaster.swap``); a refused one leaves
the last good model serving. Each poll's outcome is published as the bar model's is: a
``ModelSwapped`` (model_name "micro", versions "micro:<stream>:<sha8>") with the
``ModelRegistered`` the recorder stores, or a ``ModelRejected`` with the reason. The drift
monitors' changes of state go out as ``DriftEvent``s and log lines (kinds "input" and
"logloss"). docs/forecasting.md, "Serving guardrails".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from engine.messages import DriftEvent
from models.input_drift import InputDriftStatus
from models.lob_drift import LossStatus, loss_event
from models.lob_guard import MicroSpec
from models.lob_server import MicroServer, registration, swap_message
from models.lob_serving import MicroForecaster

log = logging.getLogger("gekko.infer")


class MicroServing:
    """``poll(now)`` and ``on_messages(batch, now)`` -> messages for the ``forecasts`` ring."""

    def __init__(self, cfg: Any, source: Any, clock: Callable[[], int] = time.monotonic_ns) -> None:
        inf = cfg.inference
        self.server = MicroServer(source, MicroSpec.from_config(cfg))
        self.publish_delta = float(inf.micro_publish_delta)
        self.monitor_args = {
            "window": int(inf.drift_window),
            "margin": float(inf.drift_margin),
            "z_crit": float(inf.drift_z),
            "psi": float(inf.micro_input_psi),
            "psi_window": int(inf.micro_input_rows),
        }
        self.clock = clock
        self.fc: MicroForecaster | None = None
        self.counts = dict.fromkeys(("swaps", "rejects", "drift_events", "forecasts"), 0)

    def poll(self) -> list[Any]:
        """Check the model source: what a new, refused or first version publishes."""
        ev = self.server.poll()
        if ev is None:
            return []
        out: list[Any] = [swap_message(ev, self.clock())]
        if ev.kind == "rejected":
            self.counts["rejects"] += 1
            return out
        model = self.server.current
        assert model is not None
        if self.fc is None:
            ticks = dict.fromkeys(self.server.spec.iids, 1.0)  # engine prices count ticks
            self.fc = MicroForecaster(model, ticks, self.publish_delta)
            off = self.fc.monitor(**self.monitor_args)
            log.info(
                "inference: micro model %s serving %d instruments (%s)",
                model.version,
                len(ticks),
                ", ".join(self.server.spec.symbols),
            )
        else:
            off = self.fc.swap(model)
            self.counts["swaps"] += 1
        for why in off:
            log.info("inference: micro model %s: drift monitor off, %s", model.version, why)
        out.append(registration(model, ev.old_version))
        return out

    def on_messages(self, msgs: list[Any], now_ns: int) -> list[Any]:
        """Forecasts of a market-data batch, then the drift events it caused."""
        fc = self.fc
        if fc is None:
            return []
        out: list[Any] = fc.on_messages(msgs, now_ns)
        self.counts["forecasts"] += len(out)
        for st in fc.checks():
            out.append(self.note_drift(st))
        return out

    def note_drift(self, st: InputDriftStatus | LossStatus) -> DriftEvent:
        """A micro monitor's change of state: counted, logged, and its event."""
        assert self.fc is not None
        version = self.fc.version
        self.counts["drift_events"] += 1
        if isinstance(st, LossStatus):
            ev = loss_event(version, st, self.clock())
            what = (
                f"log loss {st.loss:.4f} per mid change vs {st.reference:.4f} held out: z "
                f"{st.z:.2f} (critical {st.z_crit:g}); hit rate {st.hit:.3f} vs "
                f"{st.reference_hit:.3f}"
            )
        else:
            from procs.infer import drift_event

            ev = drift_event(version, st, self.clock())
            what = f"feature {st.feature} PSI {st.psi:.3f} (threshold {st.threshold:g})"
        log.log(
            logging.WARNING if ev.drifting else logging.INFO,
            "inference: micro model %s %s %s drift over %d samples: %s",
            version,
            "entered" if ev.drifting else "left",
            ev.kind,
            ev.samples,
            what,
        )
        return ev

    def report(self) -> None:
        """At exit: one line of what the micro model did."""
        fc = self.fc
        c = self.counts
        log.info(
            "infer: micro model %s: %d events scored, %d forecasts, %d swaps, %d refused, "
            "%d drift events",
            fc.version if fc else "NONE",
            fc.rows_scored if fc else 0,
            c["forecasts"],
            c["swaps"],
            c["rejects"],
            c["drift_events"],
        )
