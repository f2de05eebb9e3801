"""What the compiled cycle reports, in words: the log lines and `m.message` texts of the numpy
reference for each event code of control_unit/kernels/step.py (run only when a cycle had events).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from common.states import AxisError, GearboxState

from .kernels import step as K
from .params import HomingKind

if TYPE_CHECKING:
    from .core import ControlCore

log = logging.getLogger("control_unit")
_SAFETY_REASONS = {K.SR_HAL_LOST: "HAL lost", K.SR_HAL_MISSING: "HAL missing", K.SR_ESTOP: "E-stop pressed",
                   K.SR_GATE: "safety gate interrupted"}
_UNHEALTHY = ((K.UH_HAL, None), (K.UH_ESTOP, "E-stop still pressed"), (K.UH_GATE, "safety gate interrupted"))
_AXIS_REFUSED = {K.RA_SAFETY_STOP: "safety stop active: reset the machine (axis 0)",
                 K.RA_FAULT: "drive still reports a fault", K.RA_GUARD: "guard still open"}


def _log(module: str) -> logging.Logger:
    return logging.getLogger(f"control_unit.{module}")


def announce(core: "ControlCore", ev: np.ndarray, lost: int) -> None:
    """Turn the event rows (kind, a, b) of one compiled cycle into log lines and messages, in order."""
    from .safety import axis_text

    m = core.m
    refused: list[str] = []
    for kind, a, b in ev.tolist():
        if kind == K.EV_AXIS_ERROR:
            text = axis_text(AxisError(b))
            _log("core").warning("axis %d (%s): %s", a + 1, core.p.names[a], text)
            m.message = f"axis {a + 1}: {text}"
        elif kind == K.EV_SAFETY_STOP:
            reason = _SAFETY_REASONS.get(a) or f"critical lag error on axis {b + 1}"
            m.message = f"safety stop: {reason}"
            _log("safety").warning("SAFETY STOP: %s", reason)
        elif kind == K.EV_HAL_LOST:
            _log("safety").error("%s: safety stop, all axes torque off",
                                 "HAL segment missing" if a else "HAL heartbeat stale")
        elif kind == K.EV_SAFETY_STOP_CLEARED:
            m.message = "safety stop reset"
            _log("safety").info("safety stop reset")
        elif kind == K.EV_RESET_AXIS_REFUSED:
            refused.append(f"axis {a + 1}: {_AXIS_REFUSED[b]}")
        elif kind == K.EV_RESET:
            if a == K.RESET_REFUSED:
                bad = [("HAL segment missing" if core.hal_missing else "HAL heartbeat stale") if text is None else text
                       for bit, text in _UNHEALTHY if b & bit]
                msg = "reset refused: " + "; ".join(bad)
            elif a == K.RESET_DONE_FAULTED:
                msg = "reset done; still faulted: " + "; ".join(refused)
            else:
                msg = m.message = "reset done"
            refused = []
            _log("safety").info("Reset button: %s", msg)
        elif kind == K.EV_MACHINE_IDLE:
            _log("core").info("machine Idle (%d axes)", len(core.cfg.axes))
        elif kind == K.EV_MANUAL_TIMEOUT:
            m.message = "manual mode timed out: back to Idle"
            _log("core").warning(m.message)
        elif kind == K.EV_HOMED:
            _log("homing").info("axis %d homed (%s) at %.4f", a + 1, HomingKind(b).name, core.home.edge[a])
        elif kind == K.EV_SAFE_STOP_LATE:
            _log("safety").error("axis %d: safe stop not at rest after %.1f s: STO", a + 1,
                                 core.cfg.machine.global_safety.safety_stop_timeout)
        elif kind == K.EV_GEAR_ENGAGED:
            _log("coupling").info("axis %d: gear %s engaged", a + 1, GearboxState(b).name)
        elif kind == K.EV_COUPLED:
            _log("coupling").info("axis %d coupled to master %d (ratio %g)", a + 1, b + 1, core.cpl.ratio[a])
    if lost:
        log.warning("%d more CU events in one cycle were not announced", lost)
