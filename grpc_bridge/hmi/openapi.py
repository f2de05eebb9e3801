"""An OpenAPI 3.1 document of the HTTP/JSON API, generated from the method table and the protos.

Schemas follow the proto3 JSON mapping (field names as in the .proto, enums by name); each method's
description is its comment in the .proto file.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ..methods import Method
from ..status_map import STATUS_TO_HTTP
from .json_api import API_PREFIX

_PROTO_DIRS = (Path(__file__).resolve().parent.parent / "protos" / "evo" / "v1",
               Path(__file__).resolve().parents[2] / "common" / "protos" / "evo" / "v1")
_RPC_RE = re.compile(r"((?:^[ \t]*//[^\n]*\n)+)[ \t]*rpc[ \t]+(\w+)\s*\(", re.M)

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"}, FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"}, FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


def _rpc_comments() -> dict[str, str]:
    out: dict[str, str] = {}
    for d in _PROTO_DIRS:
        for f in sorted(d.glob("*.proto")) if d.is_dir() else ():
            for comment, name in _RPC_RE.findall(f.read_text()):
                out.setdefault(name, " ".join(line.strip().lstrip("/").strip() for line in comment.splitlines()))
    return out


def _field_schema(f: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        _message_schema(f.message_type, defs)
        s: dict[str, Any] = {"$ref": f"#/components/schemas/{f.message_type.full_name}"}
    elif f.type == FieldDescriptor.TYPE_ENUM:
        s = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    else:
        s = dict(_SCALARS.get(f.type, {"type": "integer"}))
    return {"type": "array", "items": s} if f.is_repeated else s


def _message_schema(desc: Descriptor, defs: dict[str, Any]) -> str:
    name = desc.full_name
    if name not in defs:
        defs[name] = {}  # placeholder: recursive messages
        defs[name] = {"type": "object", "additionalProperties": False,
                      "properties": {f.name: _field_schema(f, defs) for f in desc.fields}}
    return name


def openapi_document(methods: dict[str, Method], title: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    comments = _rpc_comments()
    error = {"type": "object", "properties": {
        "code": {"type": "string", "description": "gRPC status name"},
        "grpc_code": {"type": "integer"}, "message": {"type": "string"},
        "result": {"type": "string", "description": "ResultCode behind a refused command ('' if none)"}}}
    defs["Error"] = error
    paths: dict[str, Any] = {}
    for m in methods.values():
        if m.streaming:
            continue
        req, resp = _message_schema(m.request.DESCRIPTOR, defs), _message_schema(m.response.DESCRIPTOR, defs)
        op = {
            "operationId": f"{m.service.rsplit('.', 1)[-1]}_{m.name}", "tags": [m.service],
            "summary": f"{m.service}.{m.name}" + (" (operator role)" if m.command else ""),
            "description": comments.get(m.name, ""),
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{req}"}}}},
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{resp}"}}}},
                **{str(h): {"description": "refused: " + ", ".join(c.name for c, hh in STATUS_TO_HTTP.items()
                                                                    if hh == h),
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                   for h in sorted(set(STATUS_TO_HTTP.values()) - {200})},
            },
        }
        entry = {"post": op}
        if not m.command:
            entry["get"] = {**{k: v for k, v in op.items() if k != "requestBody"},
                            "operationId": op["operationId"] + "_get",
                            "description": op["description"] + " Request fields may be given as query parameters."}
        paths[f"{API_PREFIX}/{m.service}/{m.name}"] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "v1",
                 "description": "The evo operator API over HTTP/JSON: each path runs the gRPC method of the same "
                                "name (same validation, command path, errors and roles). Live data: WebSocket "
                                f"{API_PREFIX}/live."},
        "components": {"schemas": defs, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
