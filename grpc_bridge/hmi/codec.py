"""Proto <-> JSON for the HMI: the canonical proto3 JSON mapping with the .proto field names.

64-bit integers are sent as JSON numbers when exact (a page reads cycle counts as numbers).
"""
from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def to_json(msg: Message) -> dict[str, Any]:
    """Every field, defaults included (an operator must see a 0 or a false), enums by name."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True, unquote_int64_if_possible=True)


def from_json(data: object, cls: type[Message]) -> Message:
    """A request from a JSON object; raises ValueError naming the field that is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"the request body must be a JSON object ({cls.DESCRIPTOR.name}), got {type(data).__name__}")
    try:
        return json_format.ParseDict(data, cls())
    except json_format.ParseError as e:
        raise ValueError(str(e).replace("\n", " ")) from None
