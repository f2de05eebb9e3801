"""The driver interface every HAL backend implements (sim, EtherCAT, CAN, ...).

A driver exchanges preallocated numpy buffers (DriverIO) with the HAL cycle: commands in, status out.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

from common.config import EvoConfig
from common.consts import BANK_WORDS, MAX_AI, MAX_AO, MAX_AXES, MAX_DI
from common.states import DriverState


class DriverError(Exception):
    """A driver cannot be created or opened (bad driver_args, missing hardware, ...)."""


@dataclass(frozen=True)
class DriverHealth:
    """The driver's own view of itself: overall state plus a readable reason."""

    state: DriverState
    message: str = ""


@dataclass(eq=False)
class DriverIO:
    """Exchange buffers between the HAL cycle and a driver; allocated once, reused every cycle.

    Index = axis id - 1 for per-axis arrays, pin number for I/O arrays. The HAL fills the
    command side before `Driver.cycle`, the driver fills the status side during it.
    I/O here is *physical*: DI levels on the wire (bool per pin), DO levels as a bank of 64-bit
    words (pin p = bit p % 64 of word p // 64, like a fieldbus process image), AI/AO as
    normalised raw signals in 0..1 (the HAL applies NC/NO, inversion, debounce, curves and
    averaging).
    """

    # HAL -> driver
    enable: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    brake_release: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    torque: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))  # % rated, incl. offset
    target_position: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    target_velocity: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    do_bank: np.ndarray = field(default_factory=lambda: np.zeros(BANK_WORDS, np.uint64))  # physical
    ao: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AO))  # normalised 0..1
    # driver -> HAL
    position: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    torque_estimate: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES))
    drive_ready: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    drive_fault: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    referenced: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.bool_))
    axis_state: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.uint8))  # DriverState
    # the drive's own error code while drive_fault is set (CiA 402 0x603F, CANopen EMCY); 0 = none.
    # The bridges turn it into text (common/drive_errors.py) beside the CU's DRIVE_FAULT flag.
    drive_error_code: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AXES, np.uint32))
    di: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DI, np.bool_))  # physical levels
    ai: np.ndarray = field(default_factory=lambda: np.zeros(MAX_AI))  # normalised 0..1


class Driver(ABC):
    """One hardware backend. Lifecycle: __init__ (validate config) -> open -> cycle* -> close.

    `cycle` runs inside the 1 kHz loop: it must not block, allocate large objects or log per
    cycle. `health` is cheap and may be called every cycle.
    """

    name: ClassVar[str] = ""
    #: True when the driver's positions are its own state (a simulation): the HAL persists them
    #: in the state file and hands them back through `restore_positions` after a restart.
    persists_positions: ClassVar[bool] = False
    #: False when the driver ignores target_position / target_velocity (torque-only, like the
    #: sim): the HAL then skips copying them every cycle.
    uses_targets: ClassVar[bool] = True

    def __init__(self, config: EvoConfig, args: Mapping[str, Any]) -> None:
        self.config = config
        self.args = args

    @abstractmethod
    def open(self, io: DriverIO) -> None:
        """Connect to the hardware and fill the status side of `io` with a first reading."""

    @abstractmethod
    def cycle(self, io: DriverIO, now_ns: int, dt_s: float) -> None:
        """One exchange: apply the command side of `io`, then read the status side.
        `now_ns` is the cycle's monotonic wake time, `dt_s` the time since the previous cycle."""

    @abstractmethod
    def close(self) -> None:
        """Leave the hardware safe (drives disabled) and release it."""

    @abstractmethod
    def health(self) -> DriverHealth:
        """Overall state and a readable reason. The HAL reads it every 100 ms and publishes the
        state (`hal_state`) and the reason (`hal_message`) in hal_mqt / hal_rpc / hal_re."""

    def restore_positions(self, positions: Mapping[int, float], referenced: Mapping[int, bool]) -> None:
        """Positions (and referenced flags) saved by a previous HAL instance, by axis id.
        Only called when `persists_positions` is True."""
