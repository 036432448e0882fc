"""An ``allOf`` as llama.cpp's JSON-schema converter reads it, for the synthetic engine.

LM Studio runs a GGUF model's schema through llama.cpp's converter. Its ``_visit_all_of``
(``common/json-schema-to-grammar.cpp``, llama-cpp-python 0.3.36's sources) does not
intersect the members: it lists the properties of each member that is an object (a
``$ref`` member followed, the alternatives of an ``anyOf``/``oneOf`` member taken one by
one) and writes **one closed object** of them all. Every property of a member that is not
an ``anyOf`` is required, whatever that member's ``required`` says; the properties of an
``anyOf`` member's alternatives are optional. When members give enums, the values every
member lists (counted over them) are the answer instead. Anything else in a member (a
string's pattern, a number's bounds, a nested ``allOf``) adds nothing, and the keywords
beside the ``allOf`` are not read. Where the converter reads another keyword first
(``$ref``, ``anyOf``, ``const``, ``enum``, ``properties``, a type other than ``object`` or
``string``), it never reads the ``allOf`` at all.

outlines-core, which the synthetic engine samples with, writes the members' documents one
after the other (``{"a": 1}{"b": ""}``), and the sampler's own merge keeps JSON Schema's
meaning (``required`` as listed). `all_of_as_llama_cpp` writes each ``allOf`` the
converter reads as the object (or enum) it builds, and drops the ones it does not read.
"""

from __future__ import annotations

import json
from typing import Any

from outlines_lmstudio.testing._llama_schema import local_target

__all__ = ["all_of_as_llama_cpp", "any_of_alternatives", "schema_kind"]

_VALUES = frozenset({"const", "enum", "default", "examples"})  # data, not subschemas
# Keywords whose value maps names to subschemas (or, for the dependencies, to name lists).
_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
    | {"dependentRequired", "dependencies"}
)
_DEFINITIONS = ("$defs", "definitions")


def all_of_as_llama_cpp(schema: Any) -> tuple[Any, dict[str, str]]:
    """Return ``schema`` with each ``allOf`` as llama.cpp's converter reads it.

    Parameters
    ----------
    schema
        A JSON schema already rewritten for llama.cpp's reading of a node's kind
        (``_synthetic._for_llama_cpp``); its references (``$ref``) resolve in it.

    Returns
    -------
    tuple[Any, dict[str, str]]
        The schema, and the stand-in names of properties the converter writes more than
        once (two members both declaring ``id``: the key comes twice, with the last
        member's schema), each mapped to the name it stands for. The schema's other
        nodes are as they were; a schema without ``allOf`` comes back equal.
    """
    reader = _Reader(schema)
    return reader.node(schema), reader.repeats


class _Reader:
    """One rewrite: the schema its references resolve in, and the stand-ins it names."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.text = json.dumps(root, ensure_ascii=False)
        self.repeats: dict[str, str] = {}  # stand-in -> the name it stands for

    def node(self, node: Any) -> Any:
        """Rewrite ``node`` and every schema below it."""
        if isinstance(node, list):
            return [self.node(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "allOf" in node:
            node = self.read(node)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _VALUES:
                out[key] = value
            elif key in _MAPS and isinstance(value, dict):
                out[key] = {name: self.node(sub) for name, sub in value.items()}
            else:
                out[key] = self.node(value)
        return out

    def read(self, node: dict[str, Any]) -> dict[str, Any]:
        """Return a node holding ``allOf`` as the converter reads it (one level)."""
        kind = node.get("type")
        if isinstance(kind, list) and not {"$ref", "oneOf", "anyOf"} & set(node):
            # The converter reads each type with the node's other keywords.
            top = {key: node[key] for key in _DEFINITIONS if key in node}
            rest = {key: value for key, value in node.items() if key not in _DEFINITIONS}
            return {**top, "anyOf": [{**rest, "type": single} for single in kind]}
        if schema_kind(node) != "allOf":  # a keyword read first: the allOf is never read
            return {key: value for key, value in node.items() if key != "allOf"}
        merged = self.merged(node["allOf"])
        return {**{key: node[key] for key in _DEFINITIONS if key in node}, **merged}

    def merged(self, members: list[Any]) -> dict[str, Any]:
        """Return what ``_visit_all_of`` builds of ``members``: an enum or a closed object."""
        properties: list[tuple[str, Any]] = []
        required: set[str] = set()
        counts: dict[str, tuple[Any, int]] = {}  # a value's JSON text: the value, its count

        def add(member: Any, is_required: bool, seen: frozenset[str]) -> None:
            kind = schema_kind(member)
            if kind == "$ref":
                ref = member["$ref"]
                if isinstance(ref, str) and ref not in seen:  # a chain of refs in a cycle
                    add(local_target(ref, self.root), is_required, seen | {ref})
            elif kind == "object":
                own = member.get("properties")
                for name, sub in own.items() if isinstance(own, dict) else ():
                    properties.append((name, sub))
                    if is_required:
                        required.add(name)
            elif kind == "enum" and isinstance(member["enum"], list):
                for value in member["enum"]:
                    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                    first, count = counts.get(text, (value, 0))
                    counts[text] = (first, count + 1)

        for member in members:
            alternatives = any_of_alternatives(member)
            if alternatives is None:
                add(member, True, frozenset())
            else:
                for alternative in alternatives:
                    add(alternative, False, frozenset())
        common = [value for value, count in counts.values() if count == len(members)]
        if common:
            return {"enum": common}
        return self.closed_object(properties, required)

    def closed_object(
        self, properties: list[tuple[str, Any]], required: set[str]
    ) -> dict[str, Any]:
        """Return the converter's object of ``properties``: required ones first, no others.

        A name listed twice is written twice, each time with its last schema (the
        converter keeps one rule per name); the second time under a stand-in name.
        """
        last = dict(properties)
        names = [name for name, _ in properties]
        ordered = [n for n in names if n in required] + [n for n in names if n not in required]
        written: dict[str, Any] = {}
        wanted: list[str] = []
        for name in ordered:
            key = name if name not in written else self.stand_in(name)
            written[key] = last[name]
            if name in required:
                wanted.append(key)
        return {
            "type": "object",
            "properties": written,
            "required": wanted,
            "additionalProperties": False,
        }

    def stand_in(self, name: str) -> str:
        """Return a new property name, in no text of the schema, that stands for ``name``."""
        index = len(self.repeats)
        while f"emulatedRepeat{index}" in self.text or f"emulatedRepeat{index}" in self.repeats:
            index += 1
        self.repeats[f"emulatedRepeat{index}"] = name
        return f"emulatedRepeat{index}"


def schema_kind(node: Any) -> str | None:
    """Return the kind llama.cpp's schema builder (``build_node``) gives ``node``.

    ``"$ref"``, ``"anyOf"`` (``oneOf`` and a type list too), ``"const"``, ``"enum"``,
    ``"object"``, ``"allOf"``, or None for the kinds an ``allOf`` member adds nothing of.
    """
    if not isinstance(node, dict):
        return None
    if "$ref" in node:
        return "$ref"
    kind = node.get("type")
    if "oneOf" in node or "anyOf" in node or isinstance(kind, list):
        return "anyOf"
    if "const" in node or "enum" in node:
        return "const" if "const" in node else "enum"
    has_properties = "properties" in node or node.get("additionalProperties", True) is not True
    if kind in (None, "object") and has_properties:
        return "object"
    if kind in (None, "object", "string") and "allOf" in node:
        return "allOf"
    return "object" if kind == "object" else None


def any_of_alternatives(member: Any) -> list[Any] | None:
    """Return the alternatives of an ``anyOf`` member (its ``oneOf``, its type list), or None."""
    if schema_kind(member) != "anyOf":
        return None
    if "oneOf" in member or "anyOf" in member:
        branches = member["oneOf"] if "oneOf" in member else member["anyOf"]
        return branches if isinstance(branches, list) else []
    return [{**member, "type": single} for single in member["type"]]
