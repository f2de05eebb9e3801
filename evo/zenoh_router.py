"""`python -m evo.zenoh_router`: a Zenoh router session for plants without zenohd (issue 14).

Run by the watchdog as module `zenoh_router` when `[zenoh] router = true`; routes pub/sub, queries
and liveliness between the machines and fleet tools that connect to `[zenoh] router_listen`.
"""
from __future__ import annotations

import logging
import sys
import time

from common.config import EvoConfig
from common.module_main import module_main
from common.notify import WatchdogPinger, notify_ready, notify_status, notify_stopping
from common.rt import StopFlag, process_setup

log = logging.getLogger("evo.zenoh_router")
STATUS_EVERY_S = 2.0


def router_options(config: EvoConfig):
    from common.connector.zenoh import ZenohOptions

    z = config.system.zenoh
    return ZenohOptions(mode="router", listen=z.router_listen, multicast_scouting=z.multicast_scouting,
                        gossip_scouting=z.gossip_scouting, min_peers=0)


def run(config: EvoConfig, stop: StopFlag | None = None) -> int:
    """Open the router session, report READY=1, ping the watchdog until SIGTERM. A session that
    cannot open (port taken, bad locator) exits 1 with the reason; the watchdog retries."""
    import zenoh

    process_setup("evo-zenoh")
    stop = stop or StopFlag().install()
    options = router_options(config)
    where = ", ".join(options.listen)
    try:
        session = zenoh.open(options.to_config())
    except Exception as exc:  # zenoh.ZError
        log.error("cannot open the router on %s: %s", where, exc)
        return 1
    log.info("routing on %s (scouting: multicast %s, gossip %s)", where, options.multicast_scouting,
             options.gossip_scouting)
    notify_ready(f"routing on {where}")
    pinger = WatchdogPinger(0.5)
    next_status = 0.0
    last = None
    try:
        while not stop.wait(0.25):
            pinger.tick()
            now = time.monotonic()
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                info = session.info
                text = f"routing on {where}: {len(list(info.routers_zid()))} routers, {len(list(info.peers_zid()))} peers"
                if text != last:
                    last = text
                    notify_status(text)
    finally:
        notify_stopping()
        session.close()
    log.info("stopped")
    return 0


def _load():
    return run


def main(argv: list[str] | None = None) -> int:
    return module_main("evo.zenoh_router", "evo Zenoh router (a Python Zenoh session in router mode)", _load, argv)


if __name__ == "__main__":
    sys.exit(main())
