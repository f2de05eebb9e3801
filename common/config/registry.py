"""IoRegistry: role -> pin resolution and logical access to the shared-memory I/O banks.

Built from io.toml; HAL and CU build identical instances. Conventions: see IoRegistry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import numpy as np

from common.consts import BANK_WORDS, MAX_AI, MAX_AO

from .enums import HomingMethod, IoType, Direction
from .errors import ConfigError, RoleMissing, RoleTypeMismatch
from .io import IoConfig, IoPoint
from . import roles as R

if TYPE_CHECKING:
    from .schema import AxisConfig

__all__ = ["IoRegistry", "RoleRequirement"]

_U64_ALL = (1 << 64) - 1


@dataclass(frozen=True)
class RoleRequirement:
    """A role an axis file names: where (file, section, field) and the I/O type it needs."""

    role: str
    type: IoType
    file: str
    section: str
    field: str
    axis_id: int


class IoRegistry:
    """Role -> IoPoint resolver plus logical read/write helpers on the segment banks.

    Conventions (one place):
    - DI/DO banks are `np.ndarray[uint64, 16]`; pin p is bit `p % 64` of word `p // 64`
      (same as common.shm.io_helpers).
    - Banks carry *physical* levels (what the wire shows). The registry converts:
        DI logical  = physical XOR (logic == "NC")  -> an NC contact reads True (active) when
                                                       its circuit opens: E-stop pressed,
                                                       limit reached, wire cut
        DO physical = logical XOR inverted
    - AI/AO arrays (`float64[1024]`) carry engineering units; `read_ai` returns the value,
      `write_ao` clamps to the point's [min, max]. IoPoint.curve converts to/from the
      normalised raw signal of a real channel (HAL drivers).
    - Lookups by role are one dict hit; an absent role raises RoleMissing (a KeyError), a role
      of another I/O type RoleTypeMismatch.
    """

    def __init__(self, io: IoConfig) -> None:
        self.io = io
        self._roles: dict[str, IoPoint] = {}
        self._role_of: dict[tuple[IoType, int], str] = {}
        self._di: dict[str, tuple[int, int, bool]] = {}  # role -> (word, bit mask, NC)
        self._do: dict[str, tuple[int, np.uint64, np.uint64, bool]] = {}  # word, set, clear, inv
        self._ai: dict[str, int] = {}
        self._ao: dict[str, tuple[int, float, float]] = {}
        nc = [0] * BANK_WORDS
        inv = [0] * BANK_WORDS
        self.di_role_mask = np.zeros(BANK_WORDS, np.uint64)
        self.do_role_mask = np.zeros(BANK_WORDS, np.uint64)
        self.ai_role_pins = np.zeros(MAX_AI, np.bool_)
        self.ao_role_pins = np.zeros(MAX_AO, np.bool_)
        for p in io.points:
            w, b = divmod(p.pin, 64)
            if p.type is IoType.DI and p.is_nc:
                nc[w] |= 1 << b
            if p.type is IoType.DO and p.inverted:
                inv[w] |= 1 << b
            if p.role is None:
                continue
            self._roles[p.role] = p
            self._role_of[(p.type, p.pin)] = p.role
            if p.type is IoType.DI:
                self._di[p.role] = (w, 1 << b, p.is_nc)
                self.di_role_mask[w] |= np.uint64(1 << b)
            elif p.type is IoType.DO:
                self._do[p.role] = (w, np.uint64(1 << b), np.uint64(_U64_ALL ^ (1 << b)),
                                    p.inverted)
                self.do_role_mask[w] |= np.uint64(1 << b)
            elif p.type is IoType.AI:
                self._ai[p.role] = p.pin
                self.ai_role_pins[p.pin] = True
            else:
                self._ao[p.role] = (p.pin, p.min, p.max)
                self.ao_role_pins[p.pin] = True
        #: XOR with a physical DI bank gives the logical bank (bits of NC contacts set)
        self.di_nc_mask = np.array(nc, np.uint64)
        #: XOR with a logical DO bank gives the physical bank (bits of inverted outputs set)
        self.do_inverted_mask = np.array(inv, np.uint64)
        self._owned = {t: frozenset(pin for (tt, pin) in self._role_of if tt is t) for t in IoType}

    # --- lookups ------------------------------------------------------------------------------
    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(sorted(self._roles))

    def roles_of(self, io_type: IoType | str) -> tuple[str, ...]:
        t = IoType(io_type)
        return tuple(sorted(r for r, p in self._roles.items() if p.type is t))

    def has(self, role: str) -> bool:
        return role in self._roles

    def pin(self, role: str) -> IoPoint:
        """The IoPoint carrying `role`; RoleMissing (a KeyError) if io.toml has none."""
        try:
            return self._roles[role]
        except KeyError:
            raise RoleMissing(role, file="io.toml") from None

    def get(self, role: str) -> IoPoint | None:
        return self._roles.get(role)

    # IoType is a StrEnum: "do" and IoType.DO hash and compare equal, so no conversion here
    def role_of(self, io_type: IoType | str, pin: int) -> str | None:
        return self._role_of.get((io_type, pin))

    def is_role_pin(self, io_type: IoType | str, pin: int) -> bool:
        """True if the pin belongs to the CU (has a role): RE/RPC writes to it are refused."""
        return pin in self._owned[io_type]

    def _fail(self, role: str, want: IoType) -> ConfigError:
        p = self._roles.get(role)
        if p is None:
            return RoleMissing(role, file="io.toml")
        return RoleTypeMismatch(role, want.value, p.type.value, file="io.toml", section=p.group)

    # --- by role (hot path: one dict lookup + int ops) ----------------------------------------
    def read_di(self, role: str, di_bank: np.ndarray) -> bool:
        """Logical value of a DI role (NC inverted) from a physical bank."""
        try:
            w, m, nc = self._di[role]
        except KeyError:
            raise self._fail(role, IoType.DI) from None
        return bool(int(di_bank[w]) & m) ^ nc

    def read_do(self, role: str, do_bank: np.ndarray) -> bool:
        """Logical value of a DO role (inversion undone) from a physical bank."""
        try:
            w, m, _, inv = self._do[role]
        except KeyError:
            raise self._fail(role, IoType.DO) from None
        return bool(int(do_bank[w]) & int(m)) ^ inv

    def do_bit(self, role: str) -> tuple[int, int, int, bool]:
        """(bank word, set mask, clear mask, inverted) of a DO role: what `write_do` applies, for code
        that writes the bit itself (the CU's compiled output kernel)."""
        try:
            return self._do[role]
        except KeyError:
            raise self._fail(role, IoType.DO) from None

    def write_do(self, role: str, value: bool, do_bank: np.ndarray) -> None:
        """Set the physical bit of a DO role to `value XOR inverted`."""
        w, m, clear, inv = self.do_bit(role)
        if bool(value) ^ inv:
            do_bank[w] |= m
        else:
            do_bank[w] &= clear

    def read_ai(self, role: str, ai_values: np.ndarray) -> float:
        """Engineering value of an AI role."""
        try:
            return float(ai_values[self._ai[role]])
        except KeyError:
            raise self._fail(role, IoType.AI) from None

    def write_ao(self, role: str, value: float, ao_values: np.ndarray) -> float:
        """Write an AO role in engineering units, clamped to [min, max]; returns what was
        written."""
        try:
            pin, lo, hi = self._ao[role]
        except KeyError:
            raise self._fail(role, IoType.AO) from None
        v = lo if value < lo else hi if value > hi else float(value)
        ao_values[pin] = v
        return v

    # --- by pin (role-less points, RE / HAL) --------------------------------------------------
    def read_di_pin(self, pin: int, di_bank: np.ndarray) -> bool:
        w, b = divmod(pin, 64)
        return bool((int(di_bank[w]) >> b) & 1) ^ bool((int(self.di_nc_mask[w]) >> b) & 1)

    def write_do_pin(self, pin: int, value: bool, do_bank: np.ndarray) -> None:
        w, b = divmod(pin, 64)
        phys = bool(value) ^ bool((int(self.do_inverted_mask[w]) >> b) & 1)
        if phys:
            do_bank[w] |= np.uint64(1 << b)
        else:
            do_bank[w] &= np.uint64(_U64_ALL ^ (1 << b))

    def di_logical(self, di_bank: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Whole logical DI bank from a physical one (one vectorised XOR)."""
        return np.bitwise_xor(di_bank, self.di_nc_mask, out=out)

    # --- cross-file checks --------------------------------------------------------------------
    @staticmethod
    def required_roles(axes: Iterable[AxisConfig]) -> tuple[RoleRequirement, ...]:
        """Every role the axis files name, with the I/O type its field requires."""
        out: list[RoleRequirement] = []
        for ax in axes:
            def need(role: str | None, t: IoType, section: str, field: str) -> None:
                if role is not None:
                    out.append(RoleRequirement(role, t, ax.file, section, field, ax.id))
            if ax.brake is not None:
                need(ax.brake.do_brake, IoType.DO, "brake", "do_brake")
                need(ax.brake.di_released, IoType.DI, "brake", "di_released")
            if ax.tailstock is not None:
                need(ax.tailstock.clamp_role, IoType.DO, "tailstock", "clamp_role")
                need(ax.tailstock.clamped_role, IoType.DI, "tailstock", "clamped_role")
            if ax.guard is not None:
                need(ax.guard.di_guard, IoType.DI, "guard", "di_guard")
        return tuple(out)

    def check(self, axes: Iterable[AxisConfig]) -> list[ConfigError]:
        """RoleMissing / RoleTypeMismatch for every axis-file role, plus io.toml roles whose
        conventional name (see roles.py) sits on the wrong I/O type."""
        errs: list[ConfigError] = []
        for g in self.io.groups:
            for idx, p in enumerate(g.points):
                want = R.convention_type(p.role) if p.role else None
                if want is None or want is p.type:
                    continue
                errs.append(RoleTypeMismatch(
                    p.role, want.value, p.type.value, file="io.toml", section=p.group,
                    field=f"io[{idx}].role",
                    detail=f"role '{p.role}' is a {want.value} role by convention, declared on "
                           f"{p.type.value} pin {p.pin}"))
        for req in self.required_roles(axes):
            p = self._roles.get(req.role)
            kw = dict(file=req.file, section=req.section, field=req.field)
            if p is None:
                errs.append(RoleMissing(
                    req.role, f"role '{req.role}' ({req.type.value}) is not defined in io.toml",
                    **kw))
            elif p.type is not req.type:
                errs.append(RoleTypeMismatch(
                    req.role, req.type.value, p.type.value,
                    f"role '{req.role}' must be a {req.type.value}, io.toml has it on "
                    f"{p.type.value} pin {p.pin}", **kw))
        return errs

    def warnings(self, axes: Iterable[AxisConfig]) -> list[str]:
        """Conventional roles the CU will look for and io.toml lacks (not errors)."""
        out: list[str] = []
        if not self.has(R.ESTOP):
            out.append(f"io.toml: no '{R.ESTOP}' role: the CU has no E-stop input")
        for ax in axes:
            m = ax.homing.method
            if m is HomingMethod.HOME_SENSOR:
                need = R.ref(ax.id)
            elif m is HomingMethod.LIMIT_SWITCH:
                neg = ax.homing.approach_direction is Direction.NEGATIVE
                need = R.limit_min(ax.id) if neg else R.limit_max(ax.id)
            else:
                continue
            p = self._roles.get(need)
            if p is None or p.type is not IoType.DI:
                out.append(f"{ax.file} [homing] method: {m.value} needs di role '{need}', "
                           "which io.toml lacks (homing this axis will fail)")
        return out

    def __repr__(self) -> str:
        return f"IoRegistry({len(self._roles)} roles)"
