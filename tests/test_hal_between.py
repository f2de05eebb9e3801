"""Issue 15, command round trip: the HAL takes a posted command between cycles, not at its next one.

A real HAL subprocess at a 100 ms cycle (so "between" is unmistakable), a test-side CU and RPC writer;
the gRPC bridge's post of the HAL's wake semaphore is made by a WakePoster as the bridge does.
"""
from __future__ import annotations

import re

import pytest

from common.shm.commands import HalCommand, ResultCode
from common.shm.io_helpers import get_bit
from common.shm.wake import WakePoster
from hal.synthetic_config import write_config
from tests.hal_harness import CommandClient, FakeCu, HalView, read, start_hal
from tests.helpers import wait_for

CYCLE_US = 100_000
PIN = 5


@pytest.fixture(scope="module", params=[True, False], ids=["between", "at-cycle-start"])
def env(shm_prefix, tmp_path_factory, request):
    """`[hal] commands_between_cycles` true (the default) and false: the same tests, the cycle the
    ack lands in tells them apart."""
    base = tmp_path_factory.mktemp("hal_between")
    io = ('[Outputs]\nio = [\n    { type="do", pin=5, name="plain" },\n'
          '    { type="do", pin=6, inverted=true, name="inverted" },\n]\n')
    cfg_dir = write_config(base / "config", axes=1, io=io,
                           hal={"cycle_time_us": CYCLE_US, "commands_between_cycles": request.param,
                                "stale_reads": 20})  # the auto value is one 100 ms cycle: a busy box flaps
    hal = start_hal(shm_prefix, cfg_dir, base / "run", base)
    view, cu, rpc = HalView(cfg_dir), FakeCu(), CommandClient("rpc_hal", "hal_rpc")
    poster = WakePoster("hal")
    try:
        rpc.wait_attached()
        wait_for(view.cu_connected, what="HAL to see the CU")
        env = {"hal": hal, "view": view, "rpc": rpc, "post": poster.post, "between": request.param, "sent": 0}
        yield env
    finally:
        poster.close()
        rpc.close()
        cu.close()
        view.close()
        assert hal.stop() == 0, hal.output()
    passes = int(re.search(r"(\d+) command passes between cycles", hal.output()).group(1))
    # one pass per posted command when they are taken between cycles (the tests of this module that ran)
    assert passes == (env["sent"] if request.param else 0), hal.output()


def _cycle_count(view: HalView) -> int:
    return int(read(view.rpc)["stats"]["cycle_count"])


def _just_after_a_cycle(view: HalView) -> int:
    """Wait for the HAL's next cycle (hal_rpc is committed every cycle at 100 ms: its beat is 10 ms);
    returns its count: the next one is ~100 ms away."""
    c0 = _cycle_count(view)
    return wait_for(lambda: (c := _cycle_count(view)) > c0 and c, 2.0, interval=0.0005, what="a HAL cycle")


def _send_between(env, pin: int, value: float):
    """Submit SET_DO right after a HAL cycle and post the HAL; the ack, the cycle count of the hal_rpc
    commit that carried it, that commit's level of the pin, and the cycle count before the submit."""
    view, rpc = env["view"], env["rpc"]
    cycle = _just_after_a_cycle(view)
    rid = rpc.send(HalCommand.SET_DO, pin, (value,))
    env["post"]()
    env["sent"] += 1

    def acked():
        seg = read(view.rpc)
        rpc.received += rpc.ring.poll_acks(seg["acks"])
        ack = next((a for a in rpc.received if a.request_id == rid), None)
        return ack is not None and (ack, int(seg["stats"]["cycle_count"]), get_bit(seg["io"]["do_bank"], pin))

    ack, seen_cycle, level = wait_for(acked, 5.0, interval=0.0005, what=f"ack of request {rid}")
    return ack, seen_cycle, level, cycle


@pytest.mark.parametrize("pin,value", [(5, 1.0), (6, 1.0), (5, 0.0)])
def test_a_posted_command_is_acked_within_the_cycle_with_its_output_shown(env, pin, value):
    """SET_DO submitted right after a HAL cycle and posted: its ack is committed before the HAL's
    next cycle, in a hal_rpc commit whose cycle count is the one before the submit, and that commit
    already shows the output (the inverted pin as its inverted level). Switched off, the next cycle
    takes it, and its commit shows it likewise."""
    ack, seen_cycle, level, cycle = _send_between(env, pin, value)
    assert ack.result == ResultCode.OK, ack.message
    expected = cycle if env["between"] else cycle + 1
    assert seen_cycle == expected, f"acked in cycle {seen_cycle}, submitted after cycle {cycle}"
    assert level == (bool(value) ^ (pin == 6)), "the commit with the ack shows the output"


def test_a_refused_command_between_cycles_is_refused_alike(env):
    ack, seen_cycle, level, cycle = _send_between(env, 7, 1.0)  # not configured
    assert ack.result == ResultCode.INVALID_ARGUMENT and "not configured" in ack.message
    assert seen_cycle == (cycle if env["between"] else cycle + 1) and level is False
