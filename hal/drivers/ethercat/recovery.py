"""Which SubDevices are in OP, and bringing the others back (SOEM's recover / reconfig path) with back-off.

Each step is one bounded SOEM call per SubDevice down (datagram time-outs), so the HAL cycle is never held long.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from common.states import DriverState

from ..base import DriverHealth, DriverIO

log = logging.getLogger(__name__)

#: "no answer" must be seen by this many state checks in a row (>= 10 ms apart) before a SubDevice counts as
#: lost: one late frame (a loaded host, a retried datagram) is not a bus loss; an AL error state counts at once
LOST_CONFIRMATIONS = 2


class Recovery:
    def __init__(self, driver: Any, pysoem: Any, backoff_ns: int, max_backoff_ns: int, step_timeout_us: int) -> None:
        self.d = driver
        self.step_timeout_us = step_timeout_us  # per datagram of a recover / reconfig step
        self.pysoem = pysoem
        self.backoff0 = backoff_ns
        self.backoff_max = max_backoff_ns
        n = len(driver.slaves)
        self.ok = [True] * n
        self.reasons = [""] * n
        self.since = [0] * n
        self.attempts = [0] * n
        self.backoff = [backoff_ns] * n
        self.suspect = [0] * n
        self.due = [0] * n  # per SubDevice: its next recovery action not before this
        self._rr = 0
        self.contrib = [(2 if r.rx.size else 0) + (1 if r.tx.size else 0) for r in driver.routes]
        self.expected_wkc = sum(self.contrib)
        self.down = False
        self.next_try = 0
        self.last_back = ""
        self._health = DriverHealth(DriverState.READY, self._all_ok_text())

    def _all_ok_text(self) -> str:
        t = f"{len(self.ok)} SubDevices in OP on {self.d.interface}"
        return t + (f"; {self.last_back}" if self.last_back else "")

    def health(self) -> DriverHealth:
        return self._health

    def _update(self) -> None:
        self.down = not all(self.ok)
        self.expected_wkc = sum(c for c, ok in zip(self.contrib, self.ok) if ok)
        if not self.down:
            self._health = DriverHealth(DriverState.READY, self._all_ok_text())
            return
        subs = self.d.net.subdevices
        text = "; ".join(f"{subs[k].label}: {self.reasons[k]}" for k, ok in enumerate(self.ok) if not ok)
        state = DriverState.FAULT if not any(self.ok) else DriverState.DEGRADED
        self._health = DriverHealth(state, f"{text}; recovering")

    # --- detection ---------------------------------------------------------------------------
    def check(self, now_ns: int, wkc: int, io: DriverIO) -> bool:
        """Read every AL state (bounded: one BRD, then FPRDs when they differ) and note changes.
        True when a SubDevice did not answer but is not yet confirmed lost (check again soon)."""
        from .driver import state_text

        p = self.pysoem
        master = self.d.master
        master.read_state()
        changed = pending = False
        for k, slave in enumerate(self.d.slaves):
            st = slave.state
            healthy = st == p.OP_STATE
            if healthy:
                self.suspect[k] = 0
            elif st == p.NONE_STATE and self.ok[k]:
                self.suspect[k] += 1
                if self.suspect[k] < LOST_CONFIRMATIONS:
                    pending = True
                    continue
            if healthy and not self.ok[k]:
                took = (now_ns - self.since[k]) / 1e9
                self.ok[k] = True
                self.attempts[k] = 0
                self.backoff[k] = self.backoff0
                label = self.d.net.subdevices[k].label
                self.last_back = f"{label} back in OP after {took:.1f} s"
                log.info("EtherCAT %s", self.last_back)
                changed = True
            elif not healthy:
                reason = state_text(p, st, slave.al_status)
                if self.ok[k] or reason != self.reasons[k]:
                    if self.ok[k]:
                        self.since[k] = now_ns
                        self.due[k] = now_ns + self.backoff0
                        self.next_try = self.due[k] if not self.down else min(self.next_try, self.due[k])
                        log.warning("EtherCAT %s: %s (working counter %d of %d)", self.d.net.subdevices[k].label,
                                    reason, wkc, self.expected_wkc)
                    self.ok[k] = False
                    self.reasons[k] = reason
                    self.d.routes[k].bus_lost(io)
                    changed = True
        if changed:
            self._update()
        return pending

    # --- recovery ----------------------------------------------------------------------------
    def step(self, now_ns: int) -> None:
        """One recovery action for the next SubDevice that is down and due (one per call: the blocking time
        of a step is that of one SubDevice's datagrams); the others follow in the next cycles."""
        p = self.pysoem
        n = len(self.d.slaves)
        for j in range(n):
            k = (self._rr + j) % n
            if self.ok[k] or self.due[k] > now_ns:
                continue
            self._rr = k + 1
            self.attempts[k] += 1
            if self._act(p, self.d.slaves[k]):
                self.due[k] = now_ns + 2_000_000  # next stage shortly (a state check in between)
            else:
                self.due[k] = now_ns + self.backoff[k]
                self.backoff[k] = min(self.backoff[k] * 2, self.backoff_max)
            break
        waiting = [self.due[k] for k in range(n) if not self.ok[k]]
        self.next_try = max(min(waiting), now_ns + 1_000_000) if waiting else now_ns + self.backoff0

    def _act(self, p: Any, slave: Any) -> bool:
        """True when the SubDevice moved a stage up (ack, OP request, found again, reconfigured)."""
        st = slave.state
        try:
            if st == p.NONE_STATE:
                if slave.recover(self.step_timeout_us) > 0:
                    slave.is_lost = False
                    slave.state = p.INIT_STATE
                    return True
                return False
            if st & 0x0F == p.SAFEOP_STATE and st & p.STATE_ERROR:
                slave.state = p.SAFEOP_STATE + p.STATE_ACK
                slave.write_state()
                return True
            if st == p.SAFEOP_STATE:
                slave.state = p.OP_STATE
                slave.write_state()
                return True
            # INIT / PRE-OP / an error state: a broadcast state read may show INIT for a SubDevice that was
            # power-cycled and lost its station address: make sure it has it again (cheap when it does),
            # then SOEM's reconfig (INIT -> SMs -> PRE-OP -> start-up SDOs -> SAFE-OP -> FMMUs)
            if slave.recover(self.step_timeout_us) <= 0:
                return False
            t0 = time.perf_counter()
            self.d._setup_errors = []
            got = slave.reconfig(self.step_timeout_us)
            log.debug("EtherCAT reconfig -> 0x%02X in %.1f ms", got, (time.perf_counter() - t0) * 1e3)
            if self.d._setup_errors:  # start-up SDOs of the PRE-OP -> SAFE-OP hook: not back until they apply
                log.warning("EtherCAT recovery: %s", "; ".join(self.d._setup_errors))
                self.d._setup_errors = []
                return False
            if got == p.SAFEOP_STATE:
                slave.state = p.OP_STATE
                slave.write_state()
                return True
            return False
        except Exception as e:  # noqa: BLE001 - a failed step is retried after the back-off
            log.debug("EtherCAT recovery step failed: %s", e)
            return False
