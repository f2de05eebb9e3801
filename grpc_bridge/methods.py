"""The bridge's method table: every gRPC method by full name with its classes, behavior and kind.

The gRPC server and the HMI's HTTP API serve the same entries (one code path); is_command() is the
one rule of which methods a viewer may not call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from google.protobuf import message_factory
from google.protobuf.message import Message

from .protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2
from .supervisor_forward import SERVICE as SUPERVISOR, SupervisorForwarder, is_command as supervisor_is_command

OWN_FILES = (machine_pb2, io_pb2, recipes_pb2)


def _command_methods() -> frozenset[str]:
    """Full names of our methods that change the machine (those replying CommandReply)."""
    out = set()
    for mod in OWN_FILES:
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                if m.output_type.full_name == types_pb2.CommandReply.DESCRIPTOR.full_name:
                    out.add(f"/{svc.full_name}/{m.name}")
    return frozenset(out)


COMMAND_METHODS = _command_methods()
OWN_SERVICES = tuple(svc.full_name for mod in OWN_FILES for svc in mod.DESCRIPTOR.services_by_name.values())


def is_command(method: str) -> bool:
    """Viewer-forbidden methods: our CommandReply methods, Supervisor's non-read methods, and
    anything unknown (deny by default)."""
    if method in COMMAND_METHODS:
        return True
    service, _, name = method.lstrip("/").partition("/")
    if service == SUPERVISOR:
        return supervisor_is_command(name)
    return service not in OWN_SERVICES


@dataclass(frozen=True)
class Method:
    """One served method. `behavior(request, context)` returns the reply (unary) or an async iterator
    of replies (server streaming)."""

    path: str  # "/evo.v1.Machine/MoveTo"
    service: str  # "evo.v1.Machine"
    name: str  # "MoveTo"
    request: type[Message]
    response: type[Message]
    streaming: bool
    behavior: Callable
    command: bool


def method_table(servicers: dict[str, object], supervisor: SupervisorForwarder | None) -> dict[str, Method]:
    """Every method of our services (bound to `servicers` by service full name) and of the forwarded
    Supervisor, keyed by path."""
    table: dict[str, Method] = {}
    for mod in OWN_FILES:
        for svc in mod.DESCRIPTOR.services_by_name.values():
            servicer = servicers[svc.full_name]
            for m in svc.methods:
                path = f"/{svc.full_name}/{m.name}"
                table[path] = Method(
                    path=path, service=svc.full_name, name=m.name,
                    request=_message_class(m.input_type), response=_message_class(m.output_type),
                    streaming=m.server_streaming, behavior=getattr(servicer, m.name), command=is_command(path))
    if supervisor is not None:
        for name, (req, resp, streaming, fn) in supervisor.behaviors().items():
            path = f"/{SUPERVISOR}/{name}"
            table[path] = Method(path=path, service=SUPERVISOR, name=name, request=req, response=resp,
                                 streaming=streaming, behavior=fn, command=is_command(path))
    return table


def _message_class(desc) -> type[Message]:  # noqa: ANN001
    return message_factory.GetMessageClass(desc)
