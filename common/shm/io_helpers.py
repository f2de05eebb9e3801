"""DI/DO word banks: pin p is bit `p % 64` of word `p // 64` (upstream's convention).

Scalar helpers for single pins and vectorised ones for whole pin lists (the HAL's cycle).
"""
from __future__ import annotations

import numpy as np

from common.consts import BANK_WORDS, MAX_DI

_ONE = np.uint64(1)


def _check(pin: int) -> None:
    if not 0 <= pin < MAX_DI:
        raise IndexError(f"pin {pin} out of range 0..{MAX_DI - 1}")


def get_bit(bank: np.ndarray, pin: int) -> bool:
    _check(pin)
    return bool((int(bank[pin >> 6]) >> (pin & 63)) & 1)


def set_bit(bank: np.ndarray, pin: int, value: bool) -> None:
    _check(pin)
    w = pin >> 6
    mask = 1 << (pin & 63)
    cur = int(bank[w])
    bank[w] = (cur | mask) if value else (cur & ~mask & 0xFFFF_FFFF_FFFF_FFFF)


get_di = get_bit
set_do = set_bit


def unpack_bank(bank: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """All 1024 bits as a bool array (index = pin)."""
    bits = np.unpackbits(bank.view(np.uint8), bitorder="little").view(bool)
    if out is None:
        return bits.copy()
    np.copyto(out, bits)
    return out


def pack_bank(bits: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Pack a bool array of up to 1024 pins into `bank` (u64[16]) in place."""
    packed = np.packbits(bits.astype(np.uint8, copy=False), bitorder="little")
    raw = bank.view(np.uint8)
    raw[:] = 0
    raw[: packed.size] = packed
    return bank


def new_bank() -> np.ndarray:
    return np.zeros(BANK_WORDS, dtype="<u8")
