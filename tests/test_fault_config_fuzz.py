"""Config fuzz (issue 16, "The fault-injection suite": config fuzz): a catalogue of broken configurations
generated from the default machine's own files, per error class — a wrong type for every field of every
section, an unknown field in every section, a non-finite number for every float, missing, empty,
undecodable, truncated, oversized, deeply nested and non-regular files, broken recipes. Every one is refused
with its file and field (line for a syntax error); `evo up` on it exits non-zero, names them, prints no
traceback and starts nothing (no process, no segment). In `make test` `evo up` runs on one case per class;
`make soak` runs it on every case.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from common.config import PACKAGED_CONFIG_DIR, ConfigError, load_config
from common.recipes.catalog import check_recipes
from common.toml_text import MAX_TOML_BYTES
from tests.fault_support import SOAK, SOAK_REASON, write_soak_results
from tests.fixtures.progs.evo_harness import instance_processes
from tests.helpers import REPO, module_env, remove_shm, shm_entries, unique_prefix, zenoh_isolated

pytestmark = pytest.mark.timeout(1800)

FREE_FORM = {"hal.driver_args", "mqtt.sparkplug.deadband"}  # tables whose keys are the user's
FILES = ("config.toml", "machine.toml", "axis_01_x.toml", "axis_03_z.toml")


@dataclass(frozen=True)
class Case:
    cls: str  # the error class this case belongs to
    id: str
    mutate: Callable[[Path], None]
    file: str  # the file the refusal must name
    field: str | None  # the field it must name (None: structural, the file alone)
    recipe: bool = False  # refused by the recipe check (`evo config check`), not by load_config


def _entries(text: str) -> list[tuple[str, str, int]]:
    """(section, key, line index) of every `key = value` line outside arrays of tables and inline arrays."""
    out, section = [], ""
    for i, line in enumerate(text.splitlines()):
        if m := re.match(r"^\[([A-Za-z0-9_.\-]+)\]\s*$", line):
            section = m.group(1)
        elif line.startswith("[["):
            section = "<array>"
        elif (m := re.match(r"^([A-Za-z_][A-Za-z0-9_]*) = ", line)) and section != "<array>":
            out.append((section, m.group(1), i))
    return out


def _value(doc: dict, section: str, key: str) -> object:
    for part in [p for p in section.split(".") if p]:
        doc = doc[part]
    return doc[key]


def _wrong_type(v: object) -> str | None:
    if isinstance(v, bool):
        return '"yes"'
    if isinstance(v, (int, float)):
        return f'"{v}"'
    if isinstance(v, str):
        return "12"
    if isinstance(v, list):
        return "7"
    return None


def _set_line(file: str, index: int, new: str) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        lines = (d / file).read_text().splitlines()
        lines[index] = new
        (d / file).write_text("\n".join(lines) + "\n")
    return mutate


def _insert_after(file: str, index: int, new: str) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        lines = (d / file).read_text().splitlines()
        lines.insert(index + 1, new)
        (d / file).write_text("\n".join(lines) + "\n")
    return mutate


def _write(file: str, data: bytes) -> Callable[[Path], None]:
    return lambda d: (d / file).write_bytes(data)


def _replace_with(file: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(d: Path) -> None:
        (d / file).unlink()
        make(d / file)
    return mutate


def catalogue() -> list[Case]:
    cases: list[Case] = []
    for file in FILES:
        text = (PACKAGED_CONFIG_DIR / file).read_text()
        doc = tomllib.loads(text)
        headers = {m.group(1): i for i, line in enumerate(text.splitlines())
                   if (m := re.match(r"^\[([A-Za-z0-9_.\-]+)\]\s*$", line))}
        for section, key, i in _entries(text):
            if section in FREE_FORM:
                continue
            v = _value(doc, section, key)
            bad = _wrong_type(v)
            if bad is not None:
                cases.append(Case("wrong type", f"{file}:{section}.{key}={bad}", _set_line(file, i, f"{key} = {bad}"),
                                  file, key))
            if isinstance(v, float):
                for nf in ("nan", "inf", "-inf"):
                    cases.append(Case("non-finite", f"{file}:{section}.{key}={nf}", _set_line(file, i, f"{key} = {nf}"),
                                      file, key))
        first_header = next(iter(headers))
        for section, i in headers.items():
            if section not in FREE_FORM:
                cases.append(Case("unknown field", f"{file}:[{section}] zz_unknown", _insert_after(file, i, "zz_unknown = 1"),
                                  file, "zz_unknown"))
        cases += [
            Case("syntax", f"{file}: key without value", lambda d, f=file: (d / f).write_text((d / f).read_text() + "\nbroken =\n"), file, None),
            Case("syntax", f"{file}: duplicate table", lambda d, f=file, h=first_header: (d / f).write_text(
                (d / f).read_text() + f"\n[{h}]\n"), file, None),
            Case("syntax", f"{file}: cut in half", lambda d, f=file: (d / f).write_text(
                (d / f).read_text()[: len((d / f).read_text()) // 2] + "\n[unterminated"), file, None),
            Case("encoding", f"{file}: invalid UTF-8", lambda d, f=file: (d / f).write_bytes((d / f).read_bytes() + b"\n# \xff\xfe\n"), file, None),
            Case("encoding", f"{file}: NUL byte", lambda d, f=file: (d / f).write_bytes(b"\x00" + (d / f).read_bytes()), file, None),
            Case("hostile file", f"{file}: 10 000-deep array", _write(file, b"x = " + b"[" * 10_000 + b"]" * 10_000 + b"\n"), file, None),
            Case("hostile file", f"{file}: over the size limit", _write(file, b"# " + b"x" * MAX_TOML_BYTES + b"\n"), file, None),
            Case("hostile file", f"{file}: symlink to /dev/zero", _replace_with(file, lambda p: p.symlink_to("/dev/zero")), file, None),
            Case("hostile file", f"{file}: a FIFO", _replace_with(file, lambda p: os.mkfifo(p)), file, None),
            Case("hostile file", f"{file}: a directory", _replace_with(file, lambda p: p.mkdir()), file, None),
        ]
    for file in ("config.toml", "machine.toml", "io.toml"):
        cases.append(Case("missing file", f"{file} missing", lambda d, f=file: (d / f).unlink(), file, None))
    # an empty config.toml is valid by design (every section optional); an empty machine.toml is not
    cases.append(Case("empty file", "machine.toml empty", _write("machine.toml", b""), "machine.toml", "[machine]"))
    cases += [
        Case("axes", "no axis file", lambda d: [p.unlink() for p in d.glob("axis_*.toml")], "axis_NN_*.toml", None),
        Case("axes", "axis id not its file's", lambda d: (d / "axis_02_y.toml").write_text(
            re.sub(r"(?m)^id = 2$", "id = 7", (d / "axis_02_y.toml").read_text())), "axis_02_y.toml", "id"),
        Case("axes", "two files, one id", lambda d: shutil.copy(d / "axis_02_y.toml", d / "axis_02_y2.toml"), "axis_02_y2.toml", None),
        Case("axes", "axis number 65", lambda d: shutil.copy(d / "axis_01_x.toml", d / "axis_65_w.toml"), "axis_65_w.toml", None),
        Case("roles", "a role the axis names is not in io.toml", lambda d: (d / "axis_03_z.toml").write_text(
            (d / "axis_03_z.toml").read_text().replace('di_released = "BrakeIn3"', 'di_released = "NoSuchRole9"')),
             "axis_03_z.toml", "di_released"),
        Case("recipes", "recipes_dir does not exist", lambda d: (d / "config.toml").write_text(
            (d / "config.toml").read_text().replace('recipes_dir = "recipes"', 'recipes_dir = "no-such-dir"')),
             "config.toml", "recipes_dir", recipe=True),
        Case("recipes", "recipe not TOML", _write("recipes/broken.toml", b"[recipe\nname = 1\n"), "broken.toml", None, recipe=True),
        Case("recipes", "recipe names a missing axis", _write("recipes/ghost.toml", b'[[step]]\ntype = "enable"\naxes = ["W"]\n'),
             "ghost", "axes", recipe=True),
        Case("recipes", "recipe sets a missing pin", _write("recipes/nopin.toml", b'[[step]]\ntype = "set_do"\npin = 999\nvalue = true\n'),
             "nopin", "pin", recipe=True),
        Case("recipes", "recipe symlink to /dev/zero", lambda d: (d / "recipes" / "zero.toml").symlink_to("/dev/zero"),
             "zero", None, recipe=True),
    ]
    return cases


CASES = catalogue()


def copy_config(dst: Path) -> Path:
    shutil.copytree(PACKAGED_CONFIG_DIR, dst)
    cfg = dst / "config.toml"
    text = cfg.read_text()
    # if a case were wrongly accepted, what starts must not collide with anything: free loopback ports
    from tests.helpers import free_port
    for default in ("1883", "50051", "8080"):
        text = re.sub(rf"(?m)^port = {default}$", f"port = {free_port()}", text)
    cfg.write_text(zenoh_isolated(text))
    return dst


def refusal(case: Case, d: Path) -> list[str]:
    """The messages refusing `d` (in-process: load_config, then the recipe check); [] if it was accepted."""
    try:
        cfg = load_config(d)
    except ConfigError as e:
        return [str(x) for x in (getattr(e, "errors", None) or [e])]
    return check_recipes(cfg).problems() if case.recipe else []


def names_it(case: Case, messages: list[str]) -> bool:
    return any(case.file in m and (case.field is None or case.field in m) for m in messages)


def run_up(case: Case, d: Path) -> tuple[int, str, list[str], list[int]]:
    """`evo up` (or `evo config check` for a recipe case) as a subprocess; (exit, output, segments, processes)."""
    prefix = unique_prefix("fc")
    env = module_env(prefix, EVO_RUN_DIR=str(d.parent / "run"))
    env.pop("EVO_CONFIG_DIR", None)
    args = ["config", "check", str(d)] if case.recipe else ["--config", str(d), "up"]
    log = d.parent / "evo.out"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "evo", *args], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    segs: list[str] = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if segs := shm_entries(prefix):  # it started a machine: take it all down at once, report it
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait(10)
    out = log.read_bytes().decode(errors="replace")
    segs, procs = segs or shm_entries(prefix), instance_processes(prefix)
    for pid in procs:
        os.kill(pid, 9)
    remove_shm(prefix)
    return proc.returncode, out, segs, procs


def check_cases(cases: list[Case], tmp: Path, *, subprocesses: set[str], workers: int = 3) -> list[str]:
    """Every case refused in-process naming its file and field; those in `subprocesses` also through the CLI.
    Returns the failures, one line each."""
    failures: list[str] = []
    dirs = {}
    for n, case in enumerate(cases):
        d = copy_config(tmp / f"c{n}" / "config")
        case.mutate(d)
        msgs = refusal(case, d)
        if not msgs:
            failures.append(f"{case.cls} / {case.id}: accepted")
        elif not names_it(case, msgs):
            failures.append(f"{case.cls} / {case.id}: refused without naming {case.file} {case.field or ''}: {msgs[:2]}")
        if case.id in subprocesses:
            dirs[case.id] = (case, d)

    def one(item: tuple[Case, Path]) -> str | None:
        case, d = item
        code, out, segs, procs = run_up(case, d)
        want = 1 if case.recipe else 2
        problems = []
        if code != want:
            problems.append(f"exit {code} (want {want})")
        if "Traceback" in out:
            problems.append("a traceback")
        if case.file not in out or (case.field and case.field not in out):
            problems.append(f"output does not name {case.file} {case.field or ''}")
        if segs or procs or "started pid" in out:
            problems.append(f"something started (segments {segs}, processes {procs})")
        return f"{case.cls} / {case.id}: evo {'config check' if case.recipe else 'up'}: {'; '.join(problems)}: " \
               f"{out.strip()[-300:]!r}" if problems else None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        failures += [r for r in pool.map(one, dirs.values()) if r]
    return failures


def one_per_class(cases: list[Case]) -> set[str]:
    seen: dict[str, str] = {}
    for c in cases:
        seen.setdefault(c.cls, c.id)
    return set(seen.values())


def test_catalogue_covers_every_class_and_file():
    classes = {c.cls for c in CASES}
    assert classes >= {"wrong type", "non-finite", "unknown field", "syntax", "encoding", "hostile file",
                       "missing file", "empty file", "axes", "roles", "recipes"}, classes
    assert {c.file for c in CASES if c.cls == "wrong type"} == set(FILES)
    assert len(CASES) > 100


def test_every_broken_config_is_refused_with_file_and_field(tmp_path):
    """Must exist (issue 16): config fuzz — every generated broken config refused with file and field; `evo up`
    (one per error class here) exits non-zero naming them, with no traceback and nothing started."""
    failures = check_cases(CASES, tmp_path, subprocesses=one_per_class(CASES))
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures)


@pytest.mark.skipif(not SOAK, reason=SOAK_REASON)
def test_soak_config_fuzz_evo_up_on_every_case(tmp_path):
    """Long version: `evo up` (or `evo config check` for recipes) on every case of the catalogue."""
    t0 = time.monotonic()
    failures = check_cases(CASES, tmp_path, subprocesses={c.id for c in CASES}, workers=4)
    classes: dict[str, int] = {}
    for c in CASES:
        classes[c.cls] = classes.get(c.cls, 0) + 1
    write_soak_results("config_fuzz", {"cases": len(CASES), "classes": classes, "refused_as_asked": len(CASES) - len(failures),
                                       "failures": failures[:20], "wall_s": round(time.monotonic() - t0, 1)})
    assert not failures, f"{len(failures)} of {len(CASES)}:\n" + "\n".join(failures)
