"""Recipe format and load-time validation: every refusal names recipe, step and field (unit, fast).

Checked against the default machine in config/ (X 0..600, Y 0..400, Z -200..0, Spindle NoHoming).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from common.config import load_config
from common.recipes import (
    MachineLimits,
    RecipeError,
    RecipeNotFound,
    list_recipes,
    load_bundle,
    parse_recipe,
)
from common.recipes.limits import AxisLimits, PinInfo
from common.recipes.model import MoveStep, RepeatStep, StepKind
from common.shm.commands import ResultCode
from tests.helpers import REPO

CONFIG = REPO / "config"


@pytest.fixture(scope="module")
def machine() -> MachineLimits:
    return MachineLimits.from_config(load_config(CONFIG))


def write(d: Path, name: str, body: str) -> None:
    (d / f"{name}.toml").write_text(body)


def refused(d: Path, name: str, machine: MachineLimits) -> RecipeError:
    with pytest.raises(RecipeError) as ei:
        load_bundle(d, name, machine)
    e = ei.value
    assert e.recipe in e.message and e.field in e.message, e.message
    return e


STEP_OK = '[[step]]\ntype = "dwell"\nseconds = 0.1\n'


def one_step(body: str) -> str:
    return STEP_OK + "[[step]]\n" + body


# --- the shipped examples --------------------------------------------------------------------
def test_example_recipes_are_valid(machine):
    infos = list_recipes(CONFIG / "recipes", machine)
    names = {i.name for i in infos}
    assert {"demo_cycle", "spindle_warmup", "home_all"} <= names
    for i in infos:
        assert i.valid, i.error
        assert i.steps > 0 and i.description


def test_parse_builds_the_model():
    r = parse_recipe(
        '[recipe]\ndescription = "d"\n' + one_step('type = "repeat"\ncount = 3\n'
        '[[step.steps]]\ntype = "move"\nrelative = true\ntargets = { X = 5, "2" = -1.5 }\nvelocity = 10\n'),
        "r",
    )
    rep = r.steps[1]
    assert isinstance(rep, RepeatStep) and rep.count == 3 and rep.path == "2"
    mv = rep.steps[0]
    assert isinstance(mv, MoveStep) and mv.path == "2.1" and mv.relative
    assert mv.targets == (("X", 5.0), (2, -1.5)) and mv.velocity == 10.0
    assert [s.kind for s in r.walk()] == [StepKind.DWELL, StepKind.REPEAT, StepKind.MOVE]


# --- format refusals -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, step, field",
    [
        ('type = "jump"\n', 2, "type"),
        ('type = "dwell"\nseconds = 1\nspeed = 3\n', 2, "speed"),
        ('type = "dwell"\n', 2, "seconds"),
        ('type = "dwell"\nseconds = "long"\n', 2, "seconds"),
        ('type = "dwell"\nseconds = -1\n', 2, "seconds"),
        ('seconds = 1\n', 2, "type"),
        ('type = "move"\ntargets = { X = "far" }\n', 2, "targets.X"),
        ('type = "move"\ntargets = {}\n', 2, "targets"),
        ('type = "move"\ntargets = { X = 1 }\nvelocity = 0\n', 2, "velocity"),
        ('type = "move"\ntargets = { X = 1 }\nwait = 1\n', 2, "wait"),
        ('type = "wait_di"\npin = 41\nrole = "EStop"\n', 2, "pin"),
        ('type = "wait_ai"\npin = 0\n', 2, "above"),
        ('type = "repeat"\ncount = 0\nsteps = [{ type = "dwell", seconds = 1 }]\n', 2, "count"),
        ('type = "gear_change"\naxis = "X"\ngear = 5\n', 2, "gear"),
        ('type = "set_mode"\naxis = "X"\nmode = "Manual"\n', 2, "mode"),
        ('type = "dwell"\nseconds = 1\non_error = "ignore"\n', 2, "on_error"),
        ('type = "message"\ntext = ""\n', 2, "text"),
        ('type = "dwell"\nseconds = 1\nname = "' + "é" * 16 + '"\n', 2, "name"),
        ('type = "call"\nrecipe = "' + "n" * 32 + '"\n', 2, "recipe"),
        ('type = "call"\nrecipe = "../etc/passwd"\n', 2, "recipe"),
    ],
)
def test_format_refusals(tmp_path, machine, body, step, field):
    write(tmp_path, "r", one_step(body))
    e = refused(tmp_path, "r", machine)
    assert (e.recipe, e.step, e.field) == ("r", step, field), e.message
    assert e.code == ResultCode.INVALID_ARGUMENT


def test_unknown_field_in_nested_step_names_the_path(tmp_path, machine):
    write(tmp_path, "r", one_step('type = "repeat"\ncount = 2\n[[step.steps]]\ntype = "dwell"\nseconds = 1\n'
                                  '[[step.steps]]\ntype = "dwell"\nsecs = 1\n'))
    e = refused(tmp_path, "r", machine)
    assert (e.step, e.step_path, e.field) == (2, "2.2", "secs")
    assert "step 2.2" in e.message


@pytest.mark.parametrize(
    "text, field",
    [
        ("[recipe]\nauthor = 'me'\n" + STEP_OK, "author"),
        ("[settings]\nx = 1\n" + STEP_OK, "settings"),
        ("[recipe]\nname = 'other'\n" + STEP_OK, "name"),
        ("[recipe]\non_error = 'panic'\n" + STEP_OK, "on_error"),
        ("[recipe]\ndescription = 'no steps'\n", "step"),
        ("[[step]\ntype = 'dwell'\n", "file"),
    ],
)
def test_header_refusals(tmp_path, machine, text, field):
    write(tmp_path, "r", text)
    e = refused(tmp_path, "r", machine)
    assert (e.recipe, e.step, e.field) == ("r", 0, field), e.message
    assert "header" in e.message


def test_missing_recipe_is_not_found(tmp_path, machine):
    with pytest.raises(RecipeNotFound) as ei:
        load_bundle(tmp_path, "nope", machine)
    assert ei.value.code == ResultCode.NOT_FOUND and "nope" in ei.value.message


def test_name_longer_than_31_bytes(tmp_path, machine):
    name = "ä" * 16  # 32 UTF-8 bytes, 16 characters
    e = refused(tmp_path, name, machine)
    assert e.field == "name" and "32 UTF-8 bytes" in e.detail
    ok = "ä" * 15 + "a"  # 31 bytes
    write(tmp_path, ok, STEP_OK)
    assert load_bundle(tmp_path, ok, machine).main.name == ok


# --- machine refusals ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, field, needle",
    [
        ('type = "move"\ntargets = { Q = 1 }\n', "targets.Q", "unknown axis 'Q'"),
        ('type = "move"\ntargets = { 9 = 1 }\n', "targets.9", "unknown axis '9'"),
        ('type = "enable"\naxes = ["X", "W"]\n', "axes[1]", "unknown axis 'W'"),
        ('type = "move"\ntargets = { X = 1, "1" = 2 }\n', "targets", "named twice"),
        ('type = "move"\ntargets = { X = 700 }\n', "targets.X", "outside soft limits [0, 600]"),
        ('type = "move"\ntargets = { Z = 5 }\n', "targets.Z", "outside soft limits [-200, 0]"),
        ('type = "move"\nrelative = true\ntargets = { Y = -401 }\n', "targets.Y", "exceeds travel 400"),
        ('type = "move"\ntargets = { X = 1 }\nvelocity = 501\n', "velocity", "above max_velocity 500"),
        ('type = "move"\ntargets = { X = 1 }\nacceleration = 2001\n', "acceleration", "above max_acceleration 2000"),
        ('type = "move_velocity"\naxis = "Spindle"\nvelocity = -40000\n', "velocity", "beyond max_velocity"),
        ('type = "home"\naxes = ["X", "spindle"]\n', "axes[1]", "NoHoming"),
        ('type = "set_mode"\naxis = "Q"\nmode = "Position"\n', "axis", "unknown axis 'Q'"),
        ('type = "couple"\naxis = "Y"\nmaster = 7\n', "master", "unknown axis '7'"),
        ('type = "couple"\naxis = "Y"\nmaster = "y"\n', "master", "cannot follow itself"),
        ('type = "couple"\naxis = "Y"\nmaster = "X"\nratio = 0\n', "ratio", "non-zero"),
        ('type = "set_do"\npin = 0\nvalue = true\n', "pin", "role 'BrakeOut3'"),
        ('type = "set_do"\npin = 99\nvalue = true\n', "pin", "unknown do pin 99"),
        ('type = "set_ao"\npin = 0\nvalue = 6001\n', "value", "outside ao pin 0 range [0, 6000]"),
        ('type = "set_ao"\npin = 5\nvalue = 1\n', "pin", "unknown ao pin 5"),
        ('type = "wait_di"\npin = 77\n', "pin", "unknown di pin 77"),
        ('type = "wait_di"\nrole = "NoSuchRole"\n', "role", "unknown role"),
        ('type = "wait_di"\nrole = "BrakeOut3"\n', "role", "not a di"),
        ('type = "wait_ai"\npin = 9\nabove = 1\n', "pin", "unknown ai pin 9"),
    ],
)
def test_machine_refusals(tmp_path, machine, body, field, needle):
    write(tmp_path, "r", one_step(body))
    e = refused(tmp_path, "r", machine)
    assert (e.recipe, e.step, e.field) == ("r", 2, field), e.message
    assert needle in e.message


def test_write_to_role_ao_pin_is_refused(tmp_path):
    m = MachineLimits(axes=(AxisLimits(1, "X"),), pins=(PinInfo("ao", 3, role="SpindleRef", max=10.0),))
    write(tmp_path, "r", '[[step]]\ntype = "set_ao"\npin = 3\nvalue = 1\n')
    e = refused(tmp_path, "r", m)
    assert (e.step, e.field) == (1, "pin") and "owned by the CU" in e.message


def test_axis_names_ids_and_short_names_resolve(tmp_path, machine):
    write(tmp_path, "r", '[[step]]\ntype = "enable"\naxes = [1, "y", "Z", "spindle"]\n')
    b = load_bundle(tmp_path, "r", machine)
    assert b.main.steps[0].axes == (1, "y", "Z", "spindle")


# --- calls -----------------------------------------------------------------------------------
def test_direct_recursion(tmp_path, machine):
    write(tmp_path, "a", one_step('type = "call"\nrecipe = "a"\n'))
    e = refused(tmp_path, "a", machine)
    assert (e.recipe, e.step, e.field) == ("a", 2, "recipe") and "a -> a" in e.message


def test_indirect_recursion_inside_a_repeat(tmp_path, machine):
    write(tmp_path, "a", '[[step]]\ntype = "call"\nrecipe = "b"\n')
    write(tmp_path, "b", one_step('type = "repeat"\ncount = 2\n[[step.steps]]\ntype = "call"\nrecipe = "c"\n'))
    write(tmp_path, "c", '[[step]]\ntype = "call"\nrecipe = "a"\n')
    e = refused(tmp_path, "a", machine)
    assert (e.recipe, e.step, e.field) == ("c", 1, "recipe")
    assert "a -> b -> c -> a" in e.message


def test_missing_called_recipe(tmp_path, machine):
    write(tmp_path, "a", '[[step]]\ntype = "call"\nrecipe = "b"\n')
    write(tmp_path, "b", one_step('type = "call"\nrecipe = "ghost"\n'))
    e = refused(tmp_path, "a", machine)
    assert (e.recipe, e.step, e.field) == ("b", 2, "recipe")
    assert "'ghost' not found" in e.message and e.code == ResultCode.INVALID_ARGUMENT


def test_invalid_called_recipe_refuses_the_caller(tmp_path, machine):
    write(tmp_path, "a", '[[step]]\ntype = "call"\nrecipe = "b"\n')
    write(tmp_path, "b", '[[step]]\ntype = "move"\ntargets = { X = -5 }\n')
    e = refused(tmp_path, "a", machine)
    assert (e.recipe, e.step, e.field) == ("b", 1, "targets.X")


def test_shared_callee_is_not_recursion(tmp_path, machine):
    write(tmp_path, "a", '[[step]]\ntype = "call"\nrecipe = "c"\n[[step]]\ntype = "call"\nrecipe = "b"\n')
    write(tmp_path, "b", '[[step]]\ntype = "call"\nrecipe = "c"\n')
    write(tmp_path, "c", STEP_OK)
    b = load_bundle(tmp_path, "a", machine)
    assert set(b.recipes) == {"a", "b", "c"}


def test_catalog_reports_invalid_recipes(tmp_path, machine):
    write(tmp_path, "good", STEP_OK)
    write(tmp_path, "bad", '[[step]]\ntype = "move"\ntargets = { X = 9999 }\n')
    write(tmp_path, "broken", "[[step]\n")
    (tmp_path / "README.md").write_text("not a recipe")
    infos = {i.name: i for i in list_recipes(tmp_path, machine)}
    assert set(infos) == {"good", "bad", "broken"}
    assert infos["good"].valid and infos["good"].steps == 1
    assert not infos["bad"].valid and "targets.X" in infos["bad"].error
    assert not infos["broken"].valid and "TOML" in infos["broken"].error
    # without a machine only the format is checked
    assert {i.name: i.valid for i in list_recipes(tmp_path)} == {"bad": True, "broken": False, "good": True}
