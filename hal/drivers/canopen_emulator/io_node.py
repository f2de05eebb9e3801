"""An emulated CiA 401 I/O node: 8-bit digital input/output groups (0x6000 / 0x6200), 16-bit analog (0x6401 / 0x6411).

Inputs are set by the test or integrator (`set_di`, `set_ai`); outputs are what the master's RPDOs wrote.
"""
from __future__ import annotations

from typing import Any

from .node import EmulatedNode

GROUPS = 8  # sub-indices 1..8 of each object


class Io401(EmulatedNode):
    kind = "io"

    def __init__(self, *args: Any, di: int = 0, **kw: Any) -> None:
        self.di_init = di
        super().__init__(*args, **kw)

    def on_reset(self, full: bool) -> None:
        if full:
            for g in range(GROUPS):
                self.put(0x6000, g + 1, (self.di_init >> (8 * g)) & 0xFF)

    def set_di(self, pin: int, value: bool) -> None:
        """Digital input `pin` of this node (bit pin % 8 of 0x6000 sub pin // 8 + 1)."""
        if not 0 <= pin < 8 * GROUPS:
            raise ValueError(f"di pin {pin} outside 0..{8 * GROUPS - 1}")
        with self.lock:
            sub = pin // 8 + 1
            byte = int(self.get(0x6000, sub))
            byte = byte | (1 << (pin % 8)) if value else byte & ~(1 << (pin % 8))
            self.put(0x6000, sub, byte)

    def set_ai(self, channel: int, raw: int) -> None:
        """Analog input `channel` (0-based) as its raw 16-bit value (0x6401 sub channel + 1)."""
        if not 0 <= channel < GROUPS:
            raise ValueError(f"ai channel {channel} outside 0..{GROUPS - 1}")
        with self.lock:
            self.put(0x6401, channel + 1, max(-32768, min(32767, int(raw))))

    def profile_status(self) -> dict[str, Any]:
        di = sum(int(self.get(0x6000, g + 1)) << (8 * g) for g in range(GROUPS))
        do = sum(int(self.get(0x6200, g + 1)) << (8 * g) for g in range(GROUPS))
        return {"di": di, "do": do, "ai": [int(self.get(0x6401, c + 1)) for c in range(GROUPS)],
                "ao": [int(self.get(0x6411, c + 1)) for c in range(GROUPS)]}
