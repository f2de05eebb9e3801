"""Issue 17, the operator HMI in a real headless Chromium against a machine started by `evo up`.

Every check of what the machine did goes over gRPC (or the Supervisor API), never through the page.
"""
from __future__ import annotations

import json
import os
import signal
import time
from urllib.parse import urlparse

import grpc
import pytest

from common.protos.evo.v1 import supervisor_pb2, supervisor_pb2_grpc
from grpc_bridge.protos.evo.v1 import machine_pb2, recipes_pb2, types_pb2
from tests.grpc_support import Stubs, wait_serving
from tests.helpers import free_port, wait_for
from tests.hmi_support import (
    EvoUp, browser_or_skip, chromium, clean_profile, hmi_config, requested_urls, screenshot, wait_http,
)

pytestmark = pytest.mark.timeout(300)

VIEWER, OPERATOR = "hmi-viewer-token", "hmi-operator-token"
MD = (("authorization", f"Bearer {OPERATOR}"),)
AXIS = 2  # Y: no brake, 0..400 mm


class Machine:
    def __init__(self, up: EvoUp, grpc_port: int, hmi_port: int, tmp) -> None:  # noqa: ANN001
        self.up, self.tmp = up, tmp
        self.url = f"http://127.0.0.1:{hmi_port}/"
        self.hmi_port = hmi_port
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stubs = Stubs(self.channel)
        self.sup = supervisor_pb2_grpc.SupervisorStub(self.channel)

    def status(self) -> machine_pb2.MachineStatus:
        return self.stubs.machine.GetStatus(machine_pb2.GetStatusRequest(), metadata=MD, timeout=5)

    def module(self, name: str) -> supervisor_pb2.ModuleInfo:
        reply = self.sup.ListModules(supervisor_pb2.ListModulesRequest(names=[name]), metadata=MD, timeout=5)
        return reply.modules[0]


@pytest.fixture(scope="module")
def machine(shm_prefix: str, tmp_path_factory):  # noqa: ANN001, ANN201
    browser_or_skip()
    tmp = tmp_path_factory.mktemp("hmi-browser")
    gp, hp = free_port(), free_port()
    cfg = hmi_config(tmp / "config", gp, hp, viewer_tokens=(VIEWER,), operator_tokens=(OPERATOR,), mqtt=False)
    up = EvoUp(shm_prefix, cfg, tmp / "run", tmp / "evo-up.log")
    m = Machine(up, gp, hp, tmp)
    try:
        wait_http(m.url + "api/v1/info", up.alive, timeout=90)
        for svc in ("evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Supervisor", "evo.v1.Hmi"):
            wait_serving(m.channel, svc, timeout=60)
        wait_for(lambda: m.status().machine_state == types_pb2.MACHINE_STATE_IDLE, timeout=30, what="machine IDLE")
        yield m
    finally:
        m.channel.close()
        code = up.stop()
        assert code == 0, up.output()[-4000:]


@pytest.fixture(scope="module")
def page(machine: Machine):  # noqa: ANN201
    profile = machine.tmp / "chromium-profile"
    driver = chromium(profile)
    try:
        driver.get(machine.url)
        login(driver, OPERATOR)
        yield driver
    finally:
        driver.quit()
        clean_profile(profile)


# -- page helpers -------------------------------------------------------------------------------------
def css(driver, selector: str):  # noqa: ANN001, ANN201
    return driver.find_element("css selector", selector)


def text(driver, selector: str) -> str:  # noqa: ANN001
    """The shown text, read in one script call (the page re-renders lists: no stale element handles)."""
    value = driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                                  selector)
    if value is None:
        raise AssertionError(f"no element {selector}")
    return value.strip()


def ensure_safe(machine: "Machine", driver) -> None:  # noqa: ANN001
    """What an operator does first when the machine is in a safety stop: press Reset (on the page)."""
    st = machine.status()
    if st.safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP:
        print(f"safety stop before the test ({[e.code for e in st.machine_errors]}, {st.message!r}): Reset")
        click_and_result(driver, "#reset-btn", "Reset: OK")
        wait_for(lambda: machine.status().safety_state != types_pb2.SAFETY_STATE_SAFETY_STOP, timeout=10,
                 what="safety stop cleared")


def login(driver, token: str) -> None:  # noqa: ANN001
    wait_for(lambda: css(driver, "#login").get_attribute("open") is not None, timeout=20, what="the token dialog")
    css(driver, "#token").send_keys(token)
    css(driver, "#login-btn").click()
    wait_for(lambda: text(driver, "#conn").startswith("LIVE"), timeout=20, what="the live feed connected")


def tab(driver, name: str) -> None:  # noqa: ANN001
    css(driver, f'nav#tabs button[data-tab="{name}"]').click()
    wait_for(lambda: css(driver, f"#tab-{name}").is_displayed(), timeout=5, what=f"tab {name}")


def result(driver) -> str:  # noqa: ANN001
    return text(driver, "#result")


def click_and_result(driver, selector: str, expect: str, timeout: float = 15) -> str:  # noqa: ANN001
    """Click a control and wait for the API's answer to appear in the result line."""
    driver.execute_script("const r = document.querySelector('#result'); r.hidden = true; r.textContent = '';")
    css(driver, selector).click()
    try:
        return wait_for(lambda: (r := result(driver)) and expect in r and r, timeout=timeout,
                        what=f"result containing {expect!r} after clicking {selector}")
    except AssertionError as e:
        raise AssertionError(f"{e}; the page shows: {result(driver)!r}") from None


def click_until(driver, selector: str, expect: str, tries: int = 3) -> str:  # noqa: ANN001
    """click_and_result, clicking again while the answer is UNAVAILABLE: a consumer that a loaded box
    stalled for a moment is refused at once by design (the operator would press again)."""
    for _ in range(tries - 1):
        driver.execute_script("const r = document.querySelector('#result'); r.hidden = true; r.textContent = '';")
        css(driver, selector).click()
        shown = wait_for(lambda: (r := result(driver)) and (expect in r or "UNAVAILABLE" in r) and r, timeout=15,
                         what=f"an answer after clicking {selector}")
        if "UNAVAILABLE" not in shown:
            assert expect in shown, shown
            return shown
    return click_and_result(driver, selector, expect)


def js_fetch(driver, path: str, token: str | None, body: dict) -> dict:  # noqa: ANN001
    """A request made by page script (what a forged request from a viewer's browser looks like)."""
    return driver.execute_async_script("""
        const [path, token, body, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (token) headers["Authorization"] = "Bearer " + token;
        fetch(path, {method: "POST", headers, body: JSON.stringify(body)})
          .then(async (r) => done({status: r.status, body: await r.json()}))
          .catch((e) => done({status: -1, body: String(e)}));
    """, path, token, body)


# -- tests -----------------------------------------------------------------------------------------------
def test_page_loads_clean_local_only_with_name_and_axes(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: the page loads with no console errors and no request leaving the machine; the
    machine name and the four axes are shown."""
    cfg_name = "Evo Demo Gantry"
    assert text(page, "#machine-name") == cfg_name
    assert text(page, "#role") == "OPERATOR"
    tab(page, "axes")
    cards = page.find_elements("css selector", "#axes .axis")
    assert [c.get_attribute("id") for c in cards] == ["axis-1", "axis-2", "axis-3", "axis-4"]
    assert [c.find_element("css selector", "h2 span").text for c in cards] == ["1 · X", "2 · Y", "3 · Z", "4 · Spindle"]
    wait_for(lambda: text(page, "#axis-1 .pos") not in ("", "—"), timeout=10, what="a live position")
    for name in ("machine", "io", "recipes", "cycle", "axes"):
        tab(page, name)
        time.sleep(0.3)  # one more live sample drawn
    problems = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    urls = requested_urls(page)
    assert any(u.startswith(f"ws://127.0.0.1:{machine.hmi_port}/api/v1/live") for u in urls), urls
    network = [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    assert network and all(urlparse(u).netloc == f"127.0.0.1:{machine.hmi_port}" for u in network), network
    assert not [u for u in urls if urlparse(u).scheme not in ("http", "https", "ws", "wss", "data", "chrome", "about", "blob")], urls


def test_enable_then_move_to_moves_the_axis_and_the_shown_position_follows(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: clicking Enable, then Move to, moves the axis (checked over gRPC); the position
    shown changes while the axis moves."""
    tab(page, "axes")
    ensure_safe(machine, page)
    card = f"#axis-{AXIS}"
    click_and_result(page, f'{card} [data-cmd="enable"]', "Enable axis 2 (Y): OK")
    wait_for(lambda: machine.status().axes[AXIS - 1].power in (types_pb2.POWER_STATE_STANDBY, types_pb2.POWER_STATE_MOTION),
             timeout=15, what="axis 2 powered")
    start = machine.status().axes[AXIS - 1].position
    target = start + 10.0 if start + 10.0 <= 400 else start - 10.0
    pos_in, vel_in = css(page, f"{card} .move-pos"), css(page, f"{card} .move-vel")
    pos_in.clear(), pos_in.send_keys(f"{target:g}")
    vel_in.clear(), vel_in.send_keys("5")  # 2 s of motion: several samples at the page's 10 Hz
    # Every position the page displays from now on, recorded by the page itself.
    page.execute_script("""window.shownPositions = [];
        const node = document.querySelector(arguments[0]);
        new MutationObserver(() => window.shownPositions.push(node.textContent))
            .observe(node, {childList: true, characterData: true, subtree: true});""", f"{card} .pos")
    click_and_result(page, f'{card} [data-cmd="move"]', "Move to axis 2 (Y): OK")

    def moved() -> bool:  # the CU took the target and the axis moved towards it (gRPC); a loaded box may
        a = machine.status().axes[AXIS - 1]  # stop it early with a lag error: a move all the same
        return a.target_position == target and (a.position - start) * (target - start) > 0 and \
            (abs(a.position - start) >= 5.0 or a.motion == types_pb2.MOTION_STATE_STANDSTILL and abs(a.position - start) >= 1.0)
    try:
        wait_for(moved, timeout=60, interval=0.05, what="axis 2 moving to the target (gRPC)")
    except AssertionError as e:
        st = machine.status()
        raise AssertionError(f"{e}; target {target}; machine {st.machine_state} safety {st.safety_state} "
                             f"errors {list(st.machine_errors)} axis {st.axes[AXIS - 1]}") from None
    wait_for(lambda: abs(float(text(page, f"{card} .pos")) - machine.status().axes[AXIS - 1].position) <= 0.5, timeout=10,
             what="the page showing the position gRPC reports")
    shown = [float(v) for v in page.execute_script("return window.shownPositions;")]
    between = {round(v, 3) for v in shown if min(start, target) + 0.1 < v < max(start, target) - 0.1}  # on the way
    assert between, f"the shown position did not follow the move from {start} to {target}: {shown}"
    screenshot(page, "axes-after-move")


def test_bad_move_to_value_shows_invalid_argument_and_nothing_moves(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: a bad value typed into Move to shows the API's INVALID_ARGUMENT message and nothing moves."""
    tab(page, "axes")
    card = f"#axis-{AXIS}"
    # the move of the previous test may still be under way on a loaded box, or its last 0.05 still settling
    # onto the target under a standstill set-point: judge "nothing moves" from rest at the target
    before = wait_for(lambda: (a := machine.status().axes[AXIS - 1]).motion == types_pb2.MOTION_STATE_STANDSTILL
                      and abs(a.velocity) < 0.01 and abs(a.position - a.target_position) < 0.01 and a,
                      timeout=60, what="Y at rest on its target")
    for typed, why in (("9999", "outside its soft limits [0, 400]"), ("12,5", "Couldn't parse")):
        pos_in = css(page, f"{card} .move-pos")
        pos_in.clear(), pos_in.send_keys(typed)
        shown = click_and_result(page, f'{card} [data-cmd="move"]', "INVALID_ARGUMENT")
        assert why in shown, shown
        assert css(page, "#result").get_attribute("data-ok") == "0"
    time.sleep(0.3)  # a move would have started within a few CU cycles
    after = machine.status().axes[AXIS - 1]
    # the target stays where it was; an axis the CU disabled meanwhile (e.g. the manual-mode time-out after the
    # previous test's move on a slow box) has its target set to where it stands: within the same 0.05
    assert abs(after.target_position - before.target_position) < 0.05, (before, after)
    assert after.motion == types_pb2.MOTION_STATE_STANDSTILL and abs(after.position - before.position) < 0.05
    screenshot(page, "axes-invalid-argument")


def test_estop_latches_safety_stop_and_reset_clears_it(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: E-stop from the page latches SafetyStop; Reset clears it after release."""
    click_and_result(page, "#estop-btn", "E-STOP: OK")
    wait_for(lambda: machine.status().safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP, timeout=5, what="SafetyStop")
    wait_for(lambda: text(page, "#safety-state") == "SAFETY_STOP", timeout=5, what="SAFETY_STOP shown")
    time.sleep(0.5)
    assert machine.status().safety_state == types_pb2.SAFETY_STATE_SAFETY_STOP  # latched: it does not clear itself
    tab(page, "axes")
    for _ in range(3):  # a loaded box may find the CU stale for a moment (UNAVAILABLE): ask again
        shown = click_and_result(page, f'#axis-{AXIS} [data-cmd="enable"]', "Enable axis 2 (Y): ")
        if "UNAVAILABLE" not in shown:
            break
    assert "FAILED_PRECONDITION" in shown and "reset required" in shown, shown
    tab(page, "machine")
    screenshot(page, "machine-safety-stop")
    click_and_result(page, "#reset-btn", "Reset: OK")
    wait_for(lambda: machine.status().safety_state == types_pb2.SAFETY_STATE_SAFE, timeout=10, what="SAFE after Reset")
    wait_for(lambda: text(page, "#safety-state") == "SAFE", timeout=5, what="SAFE shown")


def test_io_screen_shows_points_and_sets_a_free_output(machine: Machine, page) -> None:  # noqa: ANN001
    """I/O: every configured point by name; a free DO is settable; role pins are visibly read-only."""
    tab(page, "io")
    wait_for(lambda: page.find_elements("css selector", "#io-do tbody tr"), timeout=5, what="DO rows")
    role_row = css(page, '#io-do tbody tr[data-pin="0"]')
    assert "read-only: role BrakeOut3" in role_row.text and not role_row.find_elements("css selector", "button")
    io = machine.stubs.io
    from grpc_bridge.protos.evo.v1 import io_pb2
    value = lambda: next(p.value for p in io.GetIo(io_pb2.GetIoRequest(), metadata=MD, timeout=5).digital_outputs if p.pin == 11)  # noqa: E731
    before = value()
    for _ in range(5):  # a loaded box may make the HAL see the CU stale for a moment (outputs held safe): again
        shown = click_and_result(page, '#io-do tbody tr[data-pin="11"] button', "Set Coolant pump (DO 11): ")
        if "CU not connected" not in shown:
            break
        time.sleep(0.5)
    assert "Set Coolant pump (DO 11): OK" in shown, shown
    wait_for(lambda: value() is (not before), timeout=5, what="DO 11 toggled (gRPC)")
    wait_for(lambda: text(page, '#io-do tbody tr[data-pin="11"] td.v') == ("ON" if not before else "off"), timeout=5,
             what="DO 11 shown toggled")
    screenshot(page, "io")


def test_recipes_and_cycle_screens(machine: Machine, page) -> None:  # noqa: ANN001
    """Recipes: list, load (result shown, state LOADED); cycle figures with histograms drawn."""
    tab(page, "recipes")
    wait_for(lambda: page.find_elements("css selector", '#recipes tr[data-recipe="hmi_dwell"]'), timeout=10, what="recipe list")
    assert page.find_elements("css selector", '#recipes tr[data-recipe="home_all"]')
    click_until(page, '#recipes tr[data-recipe="hmi_dwell"] button', "Load recipe hmi_dwell: OK")
    wait_for(lambda: text(page, "#r-state") == "LOADED" and text(page, "#r-program") == "hmi_dwell", timeout=10,
             what="recipe LOADED shown")
    recipe = lambda: machine.stubs.recipes.GetRecipeStatus(recipes_pb2.GetRecipeStatusRequest(), metadata=MD, timeout=5).state  # noqa: E731
    for button, state in (("Start", types_pb2.RE_STATE_RUNNING), ("Pause", types_pb2.RE_STATE_PAUSED)):
        click_until(page, f'#tab-recipes [data-method="evo.v1.Recipes/{button}Recipe"]', f"{button} recipe: OK")
        wait_for(lambda: recipe() == state, timeout=10, what=f"recipe {button} (gRPC)")
        wait_for(lambda: text(page, "#r-state") == types_pb2.ReState.Name(state).removeprefix("RE_STATE_"), timeout=10,
                 what=f"{button} shown")
    assert text(page, "#r-step") == "1 / 1" and text(page, "#r-kind") == "dwell"
    screenshot(page, "recipes")
    click_until(page, '#tab-recipes [data-method="evo.v1.Recipes/AbortRecipe"]', "Abort recipe: OK")
    wait_for(lambda: recipe() == types_pb2.RE_STATE_ABORTED, timeout=10, what="recipe aborted (gRPC)")
    tab(page, "cycle")
    wait_for(lambda: text(page, "#cycle-cu").count("µs") >= 3 and text(page, "#cycle-hal").count("µs") >= 3, timeout=5,
             what="cycle figures")
    drawn = page.execute_script("""const c = document.querySelector('#hist-cu');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 200 && d[i] < 120) n++; return n;""")
    assert drawn > 500, "no histogram bars drawn"
    screenshot(page, "cycle")
    tab(page, "machine")
    screenshot(page, "machine")


def test_module_killed_shows_restarting_and_back(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: a module killed shows as restarting and back."""
    tab(page, "machine")
    old = machine.module("re")
    assert old.state == supervisor_pb2.MODULE_STATE_RUNNING and old.pid
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: page.find_elements("css selector", '#module-events li[data-module="re"][data-state="BACKOFF"]'),
             timeout=15, what="the page's event list showing re restarting (BACKOFF)")
    event = text(page, '#module-events li[data-module="re"][data-state="BACKOFF"]')
    assert "SIGKILL" in event, event

    def back() -> bool:
        row = '#modules tr[data-module="re"]'
        return text(page, f"{row} .state") == "RUNNING" and text(page, f"{row} .restarts") == "1" and \
            text(page, f"{row} .pid") not in ("—", str(old.pid))
    try:
        wait_for(back, timeout=30, interval=0.1, what="re RUNNING again with 1 restart on the page")
    except AssertionError as e:
        screenshot(page, "FAILED-module-restart")
        raise AssertionError(f"{e}; modules: {text(page, '#modules')!r}; grpc: {machine.module('re')}") from None
    assert machine.module("re").state == supervisor_pb2.MODULE_STATE_RUNNING
    screenshot(page, "machine-module-restarted")


def test_sources_not_live_are_shown_as_not_live(machine: Machine, page) -> None:  # noqa: ANN001
    """Must exist: a value whose source is not live is shown as not live (greyed + badge), and live again after."""
    def stale(selector: str) -> bool:
        return "stale" in css(page, selector).get_attribute("class").split()

    tab(page, "recipes")
    machine.sup.StopModule(supervisor_pb2.ModuleRequest(name="re"), metadata=MD, timeout=30)
    wait_for(lambda: stale('#tab-recipes .panel[data-source="re"]'), timeout=10, what="recipe panel greyed")
    badge = css(page, '#tab-recipes .panel[data-source="re"] .notlive-badge')
    assert badge.is_displayed() and "NOT LIVE" in badge.text and "recipe executor" in badge.text, badge.text
    assert not stale('#tab-machine .panel[data-source="cu"]')  # the CU is still live
    screenshot(page, "recipes-not-live")
    machine.sup.StartModule(supervisor_pb2.ModuleRequest(name="re"), metadata=MD, timeout=30)
    wait_for(lambda: not stale('#tab-recipes .panel[data-source="re"]'), timeout=20, what="recipe panel live again")

    tab(page, "axes")
    machine.sup.StopModule(supervisor_pb2.ModuleRequest(name="cu"), metadata=MD, timeout=30)
    wait_for(lambda: stale(f"#axis-{AXIS}") and stale("header .states"), timeout=10, what="axes and states greyed")
    badge = css(page, f"#axis-{AXIS} .notlive-badge")
    assert badge.is_displayed() and "control unit" in badge.text, badge.text
    screenshot(page, "axes-cu-not-live")
    machine.sup.StartModule(supervisor_pb2.ModuleRequest(name="cu"), metadata=MD, timeout=30)
    wait_for(lambda: not stale(f"#axis-{AXIS}"), timeout=30, what="axes live again")


def test_viewer_sees_everything_with_commands_disabled_and_forged_commands_refused(machine: Machine) -> None:
    """Must exist: with tokens, the viewer's buttons are disabled, and a forged viewer request is refused."""
    profile = machine.tmp / "chromium-viewer"
    driver = chromium(profile)
    try:
        driver.get(machine.url)
        screenshot(driver, "login")
        login(driver, VIEWER)
        assert text(driver, "#role") == "VIEWER — read only"
        tab(driver, "io")
        wait_for(lambda: driver.find_elements("css selector", "#io-do tbody button"), timeout=10, what="DO buttons")
        tab(driver, "recipes")
        wait_for(lambda: driver.find_elements("css selector", "#recipes tbody button"), timeout=10, what="recipe buttons")
        count, enabled = driver.execute_script("""const all = Array.from(document.querySelectorAll('.cmd'));
            return [all.length, all.filter((c) => !c.disabled).map((c) => c.outerHTML.slice(0, 80))];""")
        assert count > 40 and not enabled, (count, enabled)
        tab(driver, "axes")
        wait_for(lambda: text(driver, f"#axis-{AXIS} .pos") not in ("", "—"), timeout=10, what="viewer sees live values")
        screenshot(driver, "axes-viewer")
        before = machine.status().safety_state
        forged = js_fetch(driver, "/api/v1/evo.v1.Machine/EmergencyStop", VIEWER, {"reason": "forged"})
        assert forged["status"] == 403 and forged["body"]["code"] == "PERMISSION_DENIED", forged
        assert "operator token is required" in forged["body"]["message"]
        anonymous = js_fetch(driver, "/api/v1/evo.v1.Machine/EnableAxis", None, {"axis": 1})
        assert anonymous["status"] == 401 and anonymous["body"]["code"] == "UNAUTHENTICATED", anonymous
        time.sleep(0.2)
        assert machine.status().safety_state == before
        assert json.dumps(forged)  # shown as the API returned it
    finally:
        driver.quit()
        clean_profile(profile)
