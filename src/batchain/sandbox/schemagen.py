"""Deterministic JSON values that validate against a JSON schema.

Covers what structured-output and tool schemas use in practice: ``type`` (object,
array, string, integer, number, boolean, null, or a list of types), ``enum``,
``const``, ``properties``/``required``, ``items``/``prefixItems``, ``anyOf``/``oneOf``
(first branch), ``allOf`` (merged), ``$ref`` into ``$defs``/``definitions``,
``minItems``/``maxItems``, ``minLength``/``maxLength``, ``minimum``/``maximum``
(and exclusive forms) and common string ``format`` values.  Every declared property
is produced, so strict-mode schemas (all properties required) validate too.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ValueSource", "generate"]

_MAX_DEPTH = 12

# Some SDKs (anthropic's ``transform_schema``) move unsupported constraints into the
# description as ``{maximum: 2030, minimum: 1900}``; a model would honour them, so do we.
_HINT_RE = re.compile(
    r"\b(minimum|maximum|exclusiveMinimum|exclusiveMaximum|minLength|maxLength"
    r"|minItems|maxItems): (-?\d+(?:\.\d+)?)"
)

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "sandbox@example.com",
    "idn-email": "sandbox@example.com",
    "uri": "https://example.com/sandbox",
    "url": "https://example.com/sandbox",
    "iri": "https://example.com/sandbox",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "duration": "P1D",
}


class ValueSource:
    """Where generated values come from: a seeded RNG, prompt words, an enum chooser."""

    def __init__(
        self,
        key: str,
        words: Sequence[str],
        choose: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        self.rng = random.Random(key)
        self.words = [w for w in words if w] or ["sandbox"]
        self._choose = choose

    def choose(self, options: list[Any]) -> Any:
        if self._choose is not None:
            return self._choose(options)
        return options[self.rng.randrange(len(options))]

    def text(self, count: int) -> str:
        start = self.rng.randrange(len(self.words))
        picked = [self.words[(start + i) % len(self.words)] for i in range(count)]
        return " ".join(picked)


def generate(schema: Any, source: ValueSource, root: Any = None) -> Any:
    """A value valid for ``schema`` (best effort for exotic keywords)."""
    return _gen(schema, source, schema if root is None else root, 0)


def _resolve(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return {}
    return node


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        if isinstance(part, dict) and "$ref" in part:
            part = _resolve(part["$ref"], root)
        if not isinstance(part, dict):
            continue
        for key, value in part.items():
            if key == "properties" and isinstance(value, dict):
                merged.setdefault("properties", {}).update(value)
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return str(non_null[0]) if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _gen(schema: Any, source: ValueSource, root: Any, depth: int) -> Any:
    if not isinstance(schema, dict):
        return "sandbox" if schema is True or schema is None else None
    if "$ref" in schema:
        if depth > _MAX_DEPTH:
            return None
        return _gen(_resolve(str(schema["$ref"]), root), source, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return source.choose(list(enum))
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _gen(options[0], source, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        return _gen(_merge_all_of(schema, root), source, root, depth + 1)
    description = schema.get("description")
    if isinstance(description, str) and "{" in description:
        schema = _with_hints(schema, description)
    kind = _schema_type(schema)
    if kind == "object":
        return _object(schema, source, root, depth)
    if kind == "array":
        return _array(schema, source, root, depth)
    if kind == "integer":
        return _integer(schema, source)
    if kind == "number":
        return _number(schema, source)
    if kind == "boolean":
        return source.rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, source)


def _with_hints(schema: dict[str, Any], description: str) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for name, raw in _HINT_RE.findall(description):
        if name not in schema:
            hints[name] = float(raw) if "." in raw else int(raw)
    return {**schema, **hints} if hints else schema


def _object(schema: dict[str, Any], source: ValueSource, root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    required = schema.get("required")
    names = list(properties)
    if depth > _MAX_DEPTH:
        # recursion guard: only what must be there
        names = [n for n in names if isinstance(required, list) and n in required]
    result = {name: _gen(properties[name], source, root, depth + 1) for name in names}
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in result:
                result[name] = source.text(1)
    return result


def _array(schema: dict[str, Any], source: ValueSource, root: Any, depth: int) -> list[Any]:
    prefix = schema.get("prefixItems")
    prefix_list = prefix if isinstance(prefix, list) else []
    min_items = int(schema.get("minItems", 0) or 0)
    max_items = schema.get("maxItems")
    count = max(min_items, len(prefix_list), 0 if depth > _MAX_DEPTH else 1)
    if isinstance(max_items, int):
        count = min(count, max_items)
    items = schema.get("items", {})
    values: list[Any] = []
    for index in range(count):
        item_schema = prefix_list[index] if index < len(prefix_list) else items
        values.append(_gen(item_schema, source, root, depth + 1))
    if schema.get("uniqueItems") and len(values) > 1:
        values = [
            f"{value} {index}" if isinstance(value, str) and index else value
            for index, value in enumerate(values)
        ]
    return values


def _bounds(schema: dict[str, Any], default_lo: float, default_hi: float) -> tuple[float, float]:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    low = float(lo) if isinstance(lo, int | float) and not isinstance(lo, bool) else None
    high = float(hi) if isinstance(hi, int | float) and not isinstance(hi, bool) else None
    if low is None and high is None:
        return default_lo, default_hi
    if low is None:
        assert high is not None
        low = min(default_lo, high - (default_hi - default_lo))
    if high is None:
        high = max(default_hi, low + (default_hi - default_lo))
    return low, high


def _integer(schema: dict[str, Any], source: ValueSource) -> int:
    low, high = _bounds(schema, 0, 100)
    lo = int(low) + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    hi = int(high) - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    if float(lo) < low:
        lo += 1
    if hi < lo:
        return lo
    return source.rng.randint(lo, hi)


def _number(schema: dict[str, Any], source: ValueSource) -> float:
    low, high = _bounds(schema, 0.0, 100.0)
    if high <= low:
        return low
    value = round(low + (high - low) * source.rng.uniform(0.05, 0.95), 2)
    return min(max(value, low), high)


def _string(schema: dict[str, Any], source: ValueSource) -> str:
    fmt = schema.get("format")
    if fmt == "uuid":
        return str(uuid.UUID(int=source.rng.getrandbits(128), version=4))
    if isinstance(fmt, str) and fmt in _FORMATS:
        value = _FORMATS[fmt]
    else:
        value = source.text(source.rng.randint(1, 4))
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    if isinstance(min_len, int) and len(value) < min_len:
        value = value + "x" * (min_len - len(value))
    if isinstance(max_len, int) and len(value) > max_len:
        value = value[:max_len]
    return value
