"""Answers to queries on `evo/<machine_id>/**`: the status snapshot and every key of the tree.

Pure functions of one scan's samples (no I/O); `zenoh_output` hands them the query and replies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zenoh

from common.connector import ConfigurationError
from mqtt_bridge.payloads import (
    IO_KINDS,
    AxisInfo,
    IoPointInfo,
    axis_payload,
    axis_unavailable,
    io_payload,
    module_payload,
    recipe_payload,
    unavailable,
)
from mqtt_bridge.topics import Topics

PARAMETERS = ("axes", "io")  # selector parameters understood, e.g. `evo/m1/status?axes=1,2;io=di`


class BadQuery(ValueError):
    """A selector we refuse; the message names the parameter and what is allowed."""


@dataclass(frozen=True, slots=True)
class Filters:
    axes: tuple[int, ...] | None = None  # None: every axis
    io: tuple[str, ...] | None = None


def parse_filters(parameters: dict[str, str], axes: tuple[AxisInfo, ...]) -> Filters:
    """`axes=1,2` and `io=di,ai` from a query's parameters; BadQuery names what is wrong."""
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0]!r} (parameters: {', '.join(PARAMETERS)})")
    out_axes = out_io = None
    if "axes" in parameters:
        known = {a.id for a in axes}
        ids = []
        for part in filter(None, parameters["axes"].split(",")):
            try:
                ids.append(int(part))
            except ValueError:
                raise BadQuery(f"axes: {part!r} is not an axis id (axes: {', '.join(map(str, sorted(known)))})") from None
            if ids[-1] not in known:
                raise BadQuery(f"axes: no axis {ids[-1]} (axes: {', '.join(map(str, sorted(known)))})")
        out_axes = tuple(ids)
    if "io" in parameters:
        kinds = tuple(filter(None, parameters["io"].split(",")))
        bad = [k for k in kinds if k not in IO_KINDS]
        if bad:
            raise BadQuery(f"io: {bad[0]!r} is not an I/O kind (kinds: {', '.join(IO_KINDS)})")
        out_io = kinds
    return Filters(out_axes, out_io)


@dataclass(slots=True)
class ScanView:
    """What one scan read, plus the tables the bridge owns; the answers are built from it."""

    machine_id: str
    cu: Any
    hal: Any
    re_: Any
    statuses: dict[str, str]
    state: dict[str, Any]  # the state body as published
    axes: tuple[AxisInfo, ...]
    points: dict[str, tuple[IoPointInfo, ...]]
    modules: dict[str, dict[str, Any]]
    connectors: dict[str, dict[str, Any]]  # name -> health body
    last_change: float | None  # wall time the state body last changed


def axis_body(view: ScanView, ax: AxisInfo) -> dict[str, Any]:
    if view.cu is None:
        return axis_unavailable(ax, view.statuses.get("cu", "absent"))
    i = ax.id - 1
    feedback = view.hal["io"]["axes"][i] if view.hal is not None else None
    code = int(view.hal["io"]["drive_error_code"][i]) if view.hal is not None else 0
    return axis_payload(ax, view.cu["status"]["axes"][i], feedback, code)


def io_body(view: ScanView, kind: str) -> dict[str, Any]:
    if view.hal is None:
        return {**unavailable(view.statuses.get("hal", "absent")), "points": None}
    return io_payload(kind, view.hal["io"], view.points[kind])


def recipe_body(view: ScanView) -> dict[str, Any]:
    if view.re_ is None:
        return {**unavailable(view.statuses.get("re", "absent")), "state": None}
    return recipe_payload(view.re_["status"])


def status_body(view: ScanView, f: Filters) -> dict[str, Any]:
    """The whole snapshot of the machine (axes and I/O narrowed by the filters)."""
    axes = [a for a in view.axes if f.axes is None or a.id in f.axes]
    kinds = f.io if f.io is not None else IO_KINDS
    return {
        "machine_id": view.machine_id,
        "live": view.cu is not None,
        "state": view.state,
        "axes": {str(a.id): axis_body(view, a) for a in axes},
        "io": {k: io_body(view, k) for k in kinds},
        "recipe": recipe_body(view),
        "modules": {n: module_payload(e) for n, e in view.modules.items()},
        "connectors": view.connectors,
        "last_change": view.last_change,
    }


def answers(keys: Topics, view: ScanView, key_expr: str, f: Filters) -> list[tuple[str, dict[str, Any]]]:
    """(key, body) for every key of the tree that `key_expr` covers, built on demand."""
    wanted = zenoh.KeyExpr(key_expr)
    out: list[tuple[str, dict[str, Any]]] = []

    def add(key: str, build: Any) -> None:
        if wanted.intersects(zenoh.KeyExpr(key)):
            out.append((key, build()))

    add(f"{keys.root}/status", lambda: status_body(view, f))
    add(keys.state, lambda: view.state)
    for ax in view.axes:
        if f.axes is None or ax.id in f.axes:
            add(keys.axis(ax.id), lambda ax=ax: axis_body(view, ax))
    for kind in IO_KINDS:
        if f.io is None or kind in f.io:
            add(keys.io(kind), lambda kind=kind: io_body(view, kind))
    add(keys.recipe, lambda: recipe_body(view))
    for name, entry in view.modules.items():
        try:
            key = keys.module(name)
        except ConfigurationError:  # not a usable key chunk (the watchdog never writes one)
            continue
        add(key, lambda entry=entry: module_payload(entry))
    for name, body in view.connectors.items():
        add(keys.health(name), lambda body=body: body)
    return out
