"""Which bus unit serves which axis and which I/O pins: the cross-check every fieldbus network file needs.

A unit (EtherCAT SubDevice, CANopen node) is known by its address; each axis has exactly one drive,
each io.toml point exactly one unit, no address twice — errors name the file, the unit and the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from common.config.errors import ValidationError
from common.config.io import IoConfig, IoType
from common.config.parsing import Collector, Ctx


@dataclass(frozen=True)
class Unit:
    """One unit as the check sees it: its table entry, address, the axis it drives (None = not a
    drive) and its pin blocks (objects with `.pins`, or None) by I/O type."""

    section: str  # "node[2]", "subdevice[0]"
    address: int
    axis: int | None
    blocks: dict[str, Any]


def check_served(units: Iterable[Unit], file: str, col: Collector, axes: Any, io: IoConfig | None, *,
                 address_key: str, address_word: str, table: str, unit_word: str,
                 drive_word: str = "drive", io_word: str = "") -> dict[int, int]:
    """Run the checks; returns address -> index in `units` (for further checks of the caller).
    `address_key`/`address_word`: the field and its name in messages ("id"/"node id",
    "position"/"position"); `table`: the section of whole-network errors ("node"); `unit_word`:
    how messages name a unit ("node", "position"); `drive_word`/`io_word`: what serves an axis / a pin
    ("drive node", "io node"; default "drive" / the table's name)."""
    seen: dict[int, int] = {}
    served: dict[int, int] = {}
    owner: dict[tuple[str, int], int] = {}
    axis_ids = {a.id for a in axes}
    for i, u in enumerate(units):
        ctx = Ctx(col, file, u.section)
        if u.address in seen:
            ctx.invalid(address_key, f"{address_word} {u.address} is also used by {table}[{seen[u.address]}]")
        seen[u.address] = i
        if u.axis is not None:
            if u.axis not in axis_ids:
                ctx.invalid("axis", f"axis {u.axis} has no axis_{u.axis:02d}_*.toml file")
            elif u.axis in served:
                ctx.invalid("axis", f"axis {u.axis} is also served by {unit_word} {served[u.axis]}")
            served.setdefault(u.axis, u.address)
        for key in ("di", "do", "ai", "ao"):
            block = u.blocks.get(key)
            for pin in block.pins if block is not None else ():
                other = owner.setdefault((key, pin), u.address)
                if other != u.address:
                    ctx.invalid(key, f"{key} pin {pin} is also served by {unit_word} {other}")
                    break
    for a in axes:
        if a.id not in served:
            col.add(ValidationError(f"axis {a.id} ({a.name}) has no {drive_word} (a [[{table}]] with axis = {a.id})",
                                    file=file, section=table))
    if io is not None:
        for t in IoType:
            for p in io.points_of(t):
                if (t.value, p.pin) not in owner:
                    role = f" ({p.role})" if p.role else ""
                    col.add(ValidationError(f"io.toml {t.value} pin {p.pin}{role} is not served by any {io_word or table} "
                                            f"({t.value} = {{first_pin, count}})", file=file, section=table))
    return seen
