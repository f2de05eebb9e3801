"""Human-readable summary of a loaded configuration (what `evo config check` prints).

summarize(cfg) -> str: machine, axes (id/name/type/file), I/O counts per type, roles, warnings.
"""
from __future__ import annotations

from .enums import IoType
from .schema import EvoConfig

__all__ = ["summarize"]


def summarize(cfg: EvoConfig) -> str:
    reg = cfg.io_registry
    lines = [f"machine: {cfg.machine.name}  (config {cfg.dir})", f"axes: {len(cfg.axes)}"]
    for a in cfg.axes:
        extras = [f"homing={a.homing.method.value}", f"safe_stop={a.safe_stop.category.value}"]
        if a.brake:
            extras.append(f"brake={a.brake.do_brake}/{a.brake.di_released}")
        if a.guard:
            extras.append(f"guard={a.guard.di_guard}")
        if a.coupling:
            extras.append(f"coupled_to={a.coupling.master_axis}x{a.coupling.ratio:g}")
        if a.tailstock:
            extras.append(f"tailstock_axis={a.tailstock.coupled_axis}")
        lines.append(f"  {a.id:02d} {a.name:<14} {a.type.value:<6}  {a.file:<24} "
                     + " ".join(extras))
    counts = "  ".join(
        f"{t.name} {len(cfg.io.points_of(t))} ({len(reg.roles_of(t))} roles)" for t in IoType)
    lines.append(f"io: {counts}")
    lines.append(f"roles: {len(reg.roles)}: {', '.join(reg.roles)}")
    lines.append(f"warnings: {len(cfg.warnings)}")
    lines += [f"  - {w}" for w in cfg.warnings]
    return "\n".join(lines)
