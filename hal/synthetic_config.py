"""Writes synthetic machine configurations (N axes, M points per I/O type) for tests and benchmarks.

The files follow config/'s format; `io_toml` replaces the generated io.toml with a test's own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def _section(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())


def axis_toml(axis_id: int, *, brake: bool = False, rotary: bool = False, homing: str = "HomeSensor",
              approach: str = "Negative", min_pos: float = 0.0, max_pos: float = 500.0) -> str:
    parts = [
        _section("axis", {"id": axis_id, "name": f"A{axis_id}", "type": "rotary" if rotary else "linear"}),
        _section("kinematics", {
            "max_velocity": 360.0 if rotary else 200.0, "max_acceleration": 2000.0,
            "safe_reduced_speed_limit": 20.0, "min_pos": 0.0 if rotary else min_pos,
            "max_pos": 360.0 if rotary else max_pos, "in_position_window": 0.05,
        }),
        _section("control", {"kp": 40.0, "ki": 5.0, "kd": 1.0, "out_max": 100.0, "lag_error_limit": 2.0}),
        _section("safe_stop", {"category": "SS1", "max_decel_safe": 3000.0}),
        _section("homing", {"method": homing, "speed": 10.0, "approach_direction": approach}),
    ]
    if brake:
        parts.append(_section("brake", {"do_brake": f"BrakeOut{axis_id}", "di_released": f"BrakeIn{axis_id}"}))
    return "\n".join(parts)


def io_toml(axes: int, points: int, *, brakes: tuple[int, ...] = ()) -> str:
    """`points` of each type; every axis gets LimitMin/LimitMax/Ref roles, braked axes
    BrakeOut/BrakeIn; the rest are role-less points with a mix of the io.toml features."""
    di: list[str] = ['{ type="di", role="EStop", pin=0, logic="NC", debounce=10, sim=true }']
    pin = 1
    for a in range(1, axes + 1):
        for role, logic, sim in ((f"LimitMin{a}", "NC", True), (f"LimitMax{a}", "NC", True), (f"Ref{a}", "NO", False)):
            if pin < points:
                di.append(f'{{ type="di", role="{role}", pin={pin}, logic="{logic}", debounce=2, sim={_toml_value(sim)} }}')
                pin += 1
    do: list[str] = []
    dpin = 0
    for a in brakes:
        if pin < points:
            di.append(f'{{ type="di", role="BrakeIn{a}", pin={pin}, debounce=5 }}')
            pin += 1
        do.append(f'{{ type="do", role="BrakeOut{a}", pin={dpin} }}')
        dpin += 1
    while pin < points:
        logic = "NC" if pin % 3 == 0 else "NO"
        extra = f", enable_pin={pin - 1}, enable_state=true, enable_timeout=500" if pin % 97 == 0 else ""
        di.append(f'{{ type="di", pin={pin}, logic="{logic}", debounce={pin % 20}, sim={_toml_value(pin % 2 == 0)}{extra} }}')
        pin += 1
    while dpin < points:
        extra = ", pulse=500" if dpin % 50 == 0 else ""
        extra += ", keep_estop=true" if dpin % 7 == 0 else ""
        do.append(f'{{ type="do", pin={dpin}, init={_toml_value(dpin % 5 == 0)}, inverted={_toml_value(dpin % 4 == 0)}{extra} }}')
        dpin += 1
    curves = ['"linear"', '"quadratic"', '"cubic"', "[0.2, 0.0, 0.8]"]
    ai = [
        f'{{ type="ai", pin={p}, min=0.0, max=10.0, average={1 + p % 10}, curve={curves[p % 4]}, offset={0.1 * (p % 3)}, sim={p % 10}.0 }}'
        for p in range(points)
    ]
    ao = [
        f'{{ type="ao", pin={p}, min=0.0, max=10.0, init={p % 10}.0, curve={curves[p % 4]}{", pulse=500" if p % 50 == 0 else ""} }}'
        for p in range(points)
    ]
    out = []
    for key, rows in (("Inputs", di), ("Outputs", do), ("Analog_in", ai), ("Analog_out", ao)):
        out.append(f"[{key}]\nio = [\n    " + ",\n    ".join(rows) + ",\n]\n" if rows else "")
    return "\n".join(out)


def write_config(
    directory: Path | str,
    *,
    axes: int = 3,
    points: int = 64,
    io: str | None = None,
    hal: dict[str, Any] | None = None,
    driver_args: dict[str, Any] | None = None,
    watchdog: dict[str, Any] | None = None,
    brakes: tuple[int, ...] = (),
    axis_files: dict[int, str] | None = None,
) -> Path:
    """Write config.toml, machine.toml, io.toml and axis_NN_*.toml into `directory`.

    `io`: the io.toml text to use (default: generated with `points` per type). `hal`:
    [hal] fields. `axis_files`: replacement texts by axis id (see axis_toml)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = _section("hal", hal or {})
    if driver_args:
        cfg += "\n" + _section("hal.driver_args", driver_args)
    if watchdog:
        cfg = _section("watchdog", watchdog) + "\n" + cfg
    (d / "config.toml").write_text(cfg)
    (d / "machine.toml").write_text(
        _section("machine", {"name": f"synthetic {axes}-axis"})
        + _section("global_safety", {"default_safe_stop": "SS1", "safety_stop_timeout": 5.0,
                                     "recovery_authorization_required": False})
        + _section("service_bypass", {"bypass_axes": [], "max_service_velocity": 10.0})
    )
    (d / "io.toml").write_text(io if io is not None else io_toml(axes, points, brakes=brakes))
    for a in range(1, axes + 1):
        text = (axis_files or {}).get(a) or axis_toml(a, brake=a in brakes)
        (d / f"axis_{a:02d}_a{a}.toml").write_text(text)
    return d
