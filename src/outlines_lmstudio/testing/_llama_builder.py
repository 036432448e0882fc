"""The checks llama.cpp's schema builder makes before it converts a JSON schema.

llama.cpp's converter (``json_schema_to_grammar``) first builds the schema into a tree
(``common/json-schema.cpp``, ``common_chat_schema_builder``), and that build fails on
what it cannot read: a boolean schema anywhere but ``additionalProperties``, an empty
``anyOf``, a ``$ref`` that does not resolve, a count that is not a non-negative integer...
LM Studio's llama.cpp engine then fails the prediction. The synthetic engine samples
with outlines-core, which reads several of these, so a GGUF model is checked here first.

Hand-written: the builder is C++ inside llama.cpp, and no Python package has it. This
follows ``build_node`` and its helpers of llama-cpp-python 0.3.36's sources branch for
branch, only to find the first failure; the messages and paths are the builder's (each
checked against a build of it: tests/unit/grammar/cpp).
"""

from __future__ import annotations

from typing import Any

__all__ = ["schema_error"]

_COUNTS = {
    "array": ("minItems", "maxItems"),
    "string": ("minLength", "maxLength"),
}
_BOUNDS = (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum"))


class _Failed(Exception):
    """The builder's ``fail``: where, and what."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"JSON schema error at {path}: {message}")


def schema_error(schema: Any) -> str | None:
    """Return the builder's error for ``schema`` (``JSON schema error at #/items: ...``).

    Parameters
    ----------
    schema
        A JSON schema, as the request carries it.

    Returns
    -------
    str | None
        The first failure, as llama.cpp words it; ``None`` when the build succeeds.
    """
    try:
        _Builder(schema).node(schema, "#")
    except _Failed as exc:
        return str(exc)
    return None


class _Builder:
    """``common_chat_schema_builder``: a depth-first build that stops at the first failure.

    Recursive as the builder is; a schema nested past Python's recursion limit is left to
    the sampler (it is a ``RecursionError`` there too).
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self.refs: set[str] = set()

    def node(self, schema: Any, path: str) -> None:
        if not isinstance(schema, dict):
            raise _Failed(path, "schema must be an object")
        if "$ref" in schema:
            self.ref(schema["$ref"], path)
            return
        if "oneOf" in schema or "anyOf" in schema:
            key = "oneOf" if "oneOf" in schema else "anyOf"
            self.alternatives(schema[key], f"{path}/{key}")
            return
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise _Failed(path, "type must not be empty")
            for i, single in enumerate(kind):
                self.node({**schema, "type": single}, f"{path}/type/{i}")
            return
        if "const" in schema:
            return
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise _Failed(path, "enum must be a non-empty array")
            return
        if kind is not None and not isinstance(kind, str):
            raise _Failed(path, "type must be a string or an array of strings")
        extra = schema.get("additionalProperties", True)
        has_properties = "properties" in schema or extra is not True
        if kind is None:
            if has_properties:
                self.object(schema, path)
            elif "allOf" in schema:
                self.alternatives(schema["allOf"], f"{path}/allOf")
            elif "items" in schema or "prefixItems" in schema:
                self.array(schema, path)
            elif {"pattern", "minLength", "maxLength"} & set(schema) or self.format(schema, path):
                self.string(schema, path)
        elif kind == "object":
            if not has_properties and "allOf" in schema:
                self.alternatives(schema["allOf"], f"{path}/allOf")
            else:
                self.object(schema, path)
        elif kind == "string":
            if "allOf" in schema:
                self.alternatives(schema["allOf"], f"{path}/allOf")
            else:
                self.string(schema, path)
        elif kind == "array":
            self.array(schema, path)
        elif kind == "integer":
            for pair in _BOUNDS:  # the exclusive bound is read only without the other
                read = next((k for k in pair if k in schema), None)
                if read is not None and not _number(schema[read]):
                    raise _Failed(path, f"{read} must be a number")
        elif kind not in ("number", "boolean", "null"):
            raise _Failed(path, f"unrecognized type {kind}")

    def ref(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise _Failed(path, "$ref must be a string")
        if not value.startswith("#/"):
            raise _Failed(
                path,
                f"unsupported $ref {value}, only references into the same document are supported",
            )
        if value in self.refs:  # built already, or being built (a cycle stops here)
            return
        self.refs.add(value)
        self.node(self.resolve(value, path), value)

    def resolve(self, ref: str, path: str) -> Any:
        target = self.root
        for part in ref[2:].split("/"):  # as llama.cpp: no "~1" or "%20" unescaping
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list):
                index = int(part) if part.isdigit() else len(target)
                if index >= len(target):
                    raise _Failed(path, f"cannot resolve $ref {ref}, {part} is out of range")
                target = target[index]
            else:
                raise _Failed(path, f"cannot resolve $ref {ref}, {part} not found")
        return target

    def alternatives(self, alternatives: Any, path: str) -> None:
        if not isinstance(alternatives, list):
            raise _Failed(path, "must be an array of schemas")
        if not alternatives:
            raise _Failed(path, "must not be empty")
        for i, alternative in enumerate(alternatives):
            self.node(alternative, f"{path}/{i}")

    def object(self, schema: dict[str, Any], path: str) -> None:
        if "properties" in schema:
            properties = schema["properties"]
            if not isinstance(properties, dict):
                raise _Failed(path, "properties must be an object")
            for name, sub in properties.items():
                self.node(sub, f"{path}/properties/{name}")
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if isinstance(extra, dict):
                self.node(extra, f"{path}/additionalProperties")
            elif not isinstance(extra, bool):
                raise _Failed(path, "additionalProperties must be a boolean or a schema")

    def array(self, schema: dict[str, Any], path: str) -> None:
        if "items" in schema or "prefixItems" in schema:
            key = "items" if "items" in schema else "prefixItems"
            items = schema[key]
            if isinstance(items, list):  # a tuple: its counts are not read
                for i, item in enumerate(items):
                    self.node(item, f"{path}/{key}/{i}")
                return
            self.node(items, f"{path}/{key}")
        self.counts(schema, path, "array")

    def string(self, schema: dict[str, Any], path: str) -> None:
        if "pattern" in schema and not isinstance(schema["pattern"], str):
            raise _Failed(path, "pattern must be a string")
        self.format(schema, path)
        self.counts(schema, path, "string")

    @staticmethod
    def format(schema: dict[str, Any], path: str) -> bool:
        """Whether the format is one llama.cpp constrains (``get_format``)."""
        if "format" not in schema:
            return False
        value = schema["format"]
        if not isinstance(value, str):
            raise _Failed(path, "format must be a string")
        return value in ("date", "time", "date-time", "uuid") or (
            len(value) == 5 and value.startswith("uuid") and value[4] in "12345"
        )

    @staticmethod
    def counts(schema: dict[str, Any], path: str, kind: str) -> None:
        for key in _COUNTS[kind]:
            if key in schema:
                value = schema[key]
                # llama.cpp reads it as a C int: 2**31 wraps to a negative one
                if not _integer(value) or (value + 2**31) % 2**32 - 2**31 < 0:
                    raise _Failed(path, f"{key} must be a non-negative integer")


def _integer(value: Any) -> bool:
    """Whether nlohmann reads ``value`` as an integer: not a bool, ``3.0`` or past 64 bits."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
