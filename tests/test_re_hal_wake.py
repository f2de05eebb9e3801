"""Issue 15: the RE wakes the HAL after it commits a HAL command (the HAL takes it between cycles).

The RE's real Links on real segments; the HAL's end is a WakeWaiter on the same prefix.
"""
from __future__ import annotations

from common.shm.commands import HalCommand
from common.shm.wake import WakeWaiter
from recipe_executor.links import Links


def test_a_hal_command_posts_the_hal_once_per_commit_and_a_cu_command_does_not(fresh_prefix):
    waiter = WakeWaiter("hal", fresh_prefix)
    links = Links(stale_after_s=1.0)
    try:
        links.commit()
        assert not waiter.wait(0.0), "a commit without a HAL command does not wake the HAL"
        links.send_cu(1, axis=1)
        links.commit()
        assert not waiter.wait(0.0), "a CU command does not wake the HAL"
        links.send_hal(int(HalCommand.SET_DO), pin=3, args=(1.0,))
        links.send_hal(int(HalCommand.SET_DO), pin=4, args=(1.0,))
        assert not waiter.wait(0.0), "posted only after the commit that publishes the commands"
        links.commit()
        assert waiter.wait(0.0), "the commit with HAL commands wakes the HAL"
        assert not waiter.wait(0.0), "once per commit"
        links.commit()
        assert not waiter.wait(0.0)
    finally:
        links.close()
        waiter.close()
