"""Reading Gemini's JSON: proto field names in either spelling, and its Schema dialect.

Google's JSON parser accepts a proto field as ``lowerCamelCase`` or as its original
``snake_case`` name, and clients rely on it: google-genai dumps some nested pydantic
objects (function declarations, schemas) with snake_case keys.  :func:`field` reads
both spellings.

``responseSchema`` and a function's ``parameters`` use Gemini's ``Schema`` (an OpenAPI
3.0 subset: upper-case ``type``, ``nullable``, int64 counts as strings);
:func:`to_json_schema` turns it into the JSON Schema the shared responder generates
values for.  ``responseJsonSchema`` / ``parametersJsonSchema`` are JSON Schema already.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["field", "snake", "to_json_schema"]

_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")

_COPIED = ("format", "description", "title", "enum", "pattern", "minimum", "maximum", "default")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def snake(name: str) -> str:
    """``maxOutputTokens`` -> ``max_output_tokens``."""
    return _CAMEL_RE.sub("_", name).lower()


def field(obj: dict[str, Any], name: str) -> Any:
    """``obj[name]`` under its camelCase ``name`` or its snake_case spelling (None if absent)."""
    value = obj.get(name)
    if value is None and name != (alias := snake(name)):
        value = obj.get(alias)
    return value


def _count(value: Any) -> int | None:
    """An int64 count (a string on the wire, per proto3 JSON), or None if not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def to_json_schema(node: Any) -> dict[str, Any]:
    """The JSON Schema equivalent of a Gemini ``Schema`` (best effort, never raises)."""
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {}
    kind = field(node, "type")
    if isinstance(kind, str) and kind.upper() != "TYPE_UNSPECIFIED":
        out["type"] = kind.lower()
        if field(node, "nullable") is True:
            out["type"] = [kind.lower(), "null"]
    for name in _COPIED:
        value = field(node, name)
        if value is not None:
            out[name] = value
    for name in _COUNTS:
        count = _count(field(node, name))
        if count is not None:
            out[name] = count
    properties = field(node, "properties")
    if isinstance(properties, dict):
        out["properties"] = {key: to_json_schema(value) for key, value in properties.items()}
    required = field(node, "required")
    if isinstance(required, list):
        out["required"] = [name for name in required if isinstance(name, str)]
    items = field(node, "items")
    if isinstance(items, dict):
        out["items"] = to_json_schema(items)
    any_of = field(node, "anyOf")
    if isinstance(any_of, list):
        out["anyOf"] = [to_json_schema(option) for option in any_of]
    return out
