"""Cross-field checks of `[zenoh]` (issue 14): endpoint syntax, mode, key prefix, router endpoints.

Called from the loader's config.toml checks; every error names the field (nothing starts on one).
"""
from __future__ import annotations

import re

from .parsing import Ctx
from .schema import ZenohConfig

_IP_PROTOS = ("tcp", "udp", "tls", "quic", "ws")
_OTHER_PROTOS = ("unixsock-stream", "unixpipe", "serial", "vsock")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d+)$")
_KEY_CHUNK = re.compile(r"^[^*$#?/]+$")
MODES = ("peer", "client")


def endpoint_problem(endpoint: str) -> str | None:
    """Why `endpoint` is not a Zenoh locator (`tcp/127.0.0.1:7447`, `tcp/[::1]:7447`), else None."""
    proto, sep, rest = endpoint.partition("/")
    address = re.split(r"[?#]", rest, maxsplit=1)[0]
    if not sep or not address:
        return f"{endpoint!r} is not <protocol>/<address> (e.g. \"tcp/127.0.0.1:7447\")"
    if proto in _OTHER_PROTOS:
        return None
    if proto not in _IP_PROTOS:
        return f"{endpoint!r}: unknown protocol {proto!r} (one of {', '.join(_IP_PROTOS + _OTHER_PROTOS)})"
    m = _HOST_PORT.match(address)
    if m is None:
        return f"{endpoint!r}: the address must be host:port"
    if not 1 <= int(m[2]) <= 65535:
        return f"{endpoint!r}: port {m[2]} out of range [1, 65535]"
    return None


def check_zenoh(z: ZenohConfig, ctx: Ctx) -> None:
    """Record every problem of a parsed [zenoh] section in `ctx`."""
    if z.mode not in MODES:
        ctx.invalid("mode", f"{z.mode!r}: one of {', '.join(repr(m) for m in MODES)}")
    for name in ("listen", "connect", "router_listen"):
        for i, ep in enumerate(getattr(z, name)):
            problem = endpoint_problem(ep)
            if problem:
                ctx.invalid(f"{name}[{i}]", problem)
    if z.enabled:
        if z.mode == "client" and not z.connect:
            ctx.invalid("connect", "client mode needs at least one endpoint to connect to (a router or a peer)")
        if z.mode == "peer" and not z.listen and not z.connect and not z.multicast_scouting:
            ctx.invalid("listen", "a peer with neither listen nor connect endpoints (scouting off) reaches nobody")
    parts = z.key_prefix.split("/")
    if not z.key_prefix or not all(_KEY_CHUNK.match(p) for p in parts):
        ctx.invalid("key_prefix", f"{z.key_prefix!r}: one or more key chunks without '*', '$', '#', '?' "
                                  "or leading/trailing '/'")
    if z.router:
        if not z.router_listen:
            ctx.invalid("router_listen", "router = true needs at least one endpoint to listen on")
        both = sorted(set(z.router_listen) & set(z.listen)) if z.mode == "peer" and z.enabled else []
        if both:
            ctx.invalid("router_listen", f"{both[0]!r} is also in listen: the router and the bridge need "
                                         "endpoints of their own")
