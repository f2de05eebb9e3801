"""Readable text for a drive's error code: the CiA 301 / CiA 402 (IEC 61800-7) error code table.

Both buses report the same 16-bit codes (EtherCAT CoE 0x603F "Error code", CANopen EMCY); the HAL
publishes the code per axis and the bridges show `0x7500 communication error` beside DRIVE_FAULT.
"""
from __future__ import annotations

# Most specific first: exact codes, then the standard's groups by their leading digits.
_EXACT: dict[int, str] = {
    0x0000: "no error",
    0x1000: "generic error",
    0x2310: "continuous over-current",
    0x2311: "over-current (device input side)",
    0x2320: "short circuit / earth leakage",
    0x2330: "earth leakage",
    0x2340: "short circuit",
    0x3110: "mains over-voltage",
    0x3120: "mains under-voltage",
    0x3130: "phase failure",
    0x3210: "DC link over-voltage",
    0x3220: "DC link under-voltage",
    0x4210: "excess temperature (device)",
    0x4310: "excess temperature (drive)",
    0x5112: "supply voltage (+24 V) too low",
    0x5530: "data storage (EEPROM) error",
    0x6010: "software reset (watchdog)",
    0x6320: "parameter error",
    0x7121: "motor blocked",
    0x7300: "sensor error",
    0x7305: "incremental sensor 1 fault",
    0x7310: "speed sensor error",
    0x7320: "position sensor error",
    0x7500: "communication error",
    0x8110: "CAN overrun (objects lost)",
    0x8120: "CAN in error passive mode",
    0x8130: "life guard or heartbeat error",
    0x8140: "recovered from bus off",
    0x8210: "PDO not processed due to length error",
    0x8611: "following error",
    0x8612: "reference limit",
    0x8700: "sync controller error",
    0xFF00: "manufacturer specific",
}
_GROUPS: tuple[tuple[int, int, str], ...] = (  # (code & mask == value) -> text
    (0xFFF0, 0x8610, "positioning controller error"),
    (0xFF00, 0x2300, "current on device output side"),
    (0xFF00, 0x2200, "current inside the device"),
    (0xFF00, 0x2100, "current on device input side"),
    (0xF000, 0x2000, "current"),
    (0xFF00, 0x3200, "voltage inside the device"),
    (0xF000, 0x3000, "voltage"),
    (0xF000, 0x4000, "temperature"),
    (0xF000, 0x5000, "device hardware"),
    (0xF000, 0x6000, "device software"),
    (0xF000, 0x7000, "additional modules"),
    (0xFF00, 0x8100, "communication"),
    (0xFF00, 0x8200, "protocol error"),
    (0xFF00, 0x8600, "positioning controller"),
    (0xF000, 0x8000, "monitoring"),
    (0xF000, 0x9000, "external error"),
    (0xFF00, 0xF000, "additional functions"),
    (0xFF00, 0xFF00, "manufacturer specific"),
)


def drive_error_text(code: int) -> str:
    """`0x8611 following error`; unknown codes keep their number (`0xAB12 unknown error code`)."""
    code &= 0xFFFF
    text = _EXACT.get(code)
    if text is None:
        text = next((t for mask, value, t in _GROUPS if code & mask == value), "unknown error code")
    return f"0x{code:04X} {text}"
