"""What the executor needs from the outside world: send CU / HAL commands, read their status.

`Port` is implemented over the shared-memory segments by links.py and by fakes in unit tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from common.shm.rings import Ack


@dataclass(eq=False)
class Ticket:
    """One submitted command: `ack` is None until the consumer answered; `ack_commit` is the
    consumer's segment heartbeat when the ack was first seen (status newer than that reflects
    the command)."""

    target: str  # "cu" | "hal"
    code: int
    request_id: int
    axis: int = 0
    pin: int = 0
    args: tuple[float, ...] = ()
    sent_at: float = 0.0
    ack: Ack | None = None
    ack_commit: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.ack is not None and self.ack.ok


class Port(Protocol):
    def cu_ready(self) -> bool:
        """cu_re is fresh and the CU follows our re_cu ring (commands will be taken)."""

    def hal_ready(self) -> bool:
        """hal_re is fresh and the HAL follows our re_hal ring."""

    def send_cu(self, code: int, axis: int = 0, pin: int = 0, args: Sequence[float] = ()) -> Ticket: ...

    def send_hal(self, code: int, pin: int = 0, args: Sequence[float] = ()) -> Ticket: ...

    def cu_status(self) -> Any:
        """The CU_STATUS record of the last cu_re read (fields by name)."""

    def cu_axis(self, axis_id: int) -> Any:
        """The CU_AXIS_STATUS record of an axis (slot axis_id - 1)."""

    def cu_commits(self) -> int:
        """cu_re heartbeat as of the last read."""

    def hal_io(self) -> Any:
        """The HAL_IO record of the last hal_re read."""

    def hal_commits(self) -> int: ...
