"""Protected mode for the operator API: a listener other machines can reach needs tokens.

`[grpc] bind` (and `[hmi] bind`, which shares [grpc]'s tokens) on anything but loopback with no
viewer/operator tokens is refused, unless `[grpc] allow_unauthenticated_remote = true` says so on
purpose — like Redis's protected mode.
"""
from __future__ import annotations

import ipaddress

from .parsing import Collector, Ctx
from .schema import SystemConfig

HOW = ("set [grpc] viewer_tokens / operator_tokens, or bind to 127.0.0.1, or set "
       "[grpc] allow_unauthenticated_remote = true to allow it on purpose")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; "", 0.0.0.0 and :: mean every interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(system: SystemConfig, col: Collector, file: str = "config.toml") -> None:
    g = system.grpc
    if g.viewer_tokens or g.operator_tokens or g.allow_unauthenticated_remote:
        return
    listeners = [("grpc", g.bind)]
    if system.hmi.enabled:
        listeners.append(("hmi", system.hmi.bind))
    for section, bind in listeners:
        if not is_loopback(bind):
            Ctx(col, file, section).invalid(
                "bind", f"{bind!r} is reachable from other machines and no tokens are configured "
                        f"(anyone could drive the machine); {HOW}")
