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

The converter follows a ``$ref`` member without the guard it keeps for a plain ``$ref``:
when the properties a member brings in lead back to that ``allOf`` (Pydantic v1's
``{"allOf": [{"$ref": "#/$defs/Node"}]}`` for a recursive field with a description), it
writes the same object inside itself without end and crashes, out of stack.
`endless_all_of` finds such a loop where the converter reaches it; where it does not (a
definition nothing refers to), `all_of_as_llama_cpp` stops its copy at the loop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from outlines_lmstudio.testing._llama_schema import local_target

__all__ = [
    "DATA_KEYWORDS",
    "NAME_MAPS",
    "all_of_as_llama_cpp",
    "any_of_alternatives",
    "changed_subschemas",
    "endless_all_of",
    "schema_kind",
]

DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})  # data, not subschemas
# Keywords whose value maps names to subschemas (or, for the dependencies, to name lists).
NAME_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
    | {"dependentRequired", "dependencies"}
)


def changed_subschemas(key: str, value: Any, change: Callable[[Any], Any]) -> Any:
    """Return a node's ``key: value`` with ``change`` applied to each subschema in it.

    Data (`DATA_KEYWORDS`) is kept as it is; each entry of a map of names (`NAME_MAPS`)
    is changed, not the map as a node; any other value is changed as a whole.
    """
    if key in DATA_KEYWORDS:
        return value
    if key in NAME_MAPS and isinstance(value, dict):
        return {name: change(sub) for name, sub in value.items()}
    return change(value)


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
        nodes are as they were; a schema without ``allOf`` comes back equal. An ``allOf``
        whose ``$ref`` member would bring in the properties it is read inside (a loop the
        converter never ends, `endless_all_of`) is ``{}``: the converter must not reach it.
    """
    reader = _Reader(schema)
    return reader.node(schema), reader.repeats


class _Reader:
    """One rewrite: the schema its references resolve in, and the stand-ins it names."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.text = json.dumps(root, ensure_ascii=False)
        self.repeats: dict[str, str] = {}  # stand-in -> the name it stands for

    def node(self, node: Any, inside: frozenset[str] = frozenset()) -> Any:
        """Rewrite ``node`` and every schema below it.

        ``inside``: the references whose properties an ``allOf`` above brought in, on
        the way to ``node``; an ``allOf`` that would bring one in again is a loop.
        """
        if isinstance(node, list):
            return [self.node(item, inside) for item in node]
        if not isinstance(node, dict):
            return node
        brought: dict[str, frozenset[str]] = {}  # a merged property: the refs it came by
        if "allOf" in node:
            read = self.read(node, inside)
            if read is None:
                return {}
            node, brought = read
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {
                    name: self.node(sub, inside | brought.get(name, frozenset()))
                    for name, sub in value.items()
                }
            else:
                out[key] = changed_subschemas(key, value, lambda sub: self.node(sub, inside))
        return out

    def read(
        self, node: dict[str, Any], inside: frozenset[str]
    ) -> tuple[dict[str, Any], dict[str, frozenset[str]]] | None:
        """Return a node holding ``allOf`` as the converter reads it (one level).

        With the references each merged property came by; None for a loop (`node`).
        """
        kind = node.get("type")
        if isinstance(kind, list) and not {"$ref", "oneOf", "anyOf"} & set(node):
            # The converter reads each type with the node's other keywords.
            top = {key: node[key] for key in _DEFINITIONS if key in node}
            rest = {key: value for key, value in node.items() if key not in _DEFINITIONS}
            return {**top, "anyOf": [{**rest, "type": single} for single in kind]}, {}
        if schema_kind(node) != "allOf":  # a keyword read first: the allOf is never read
            return {key: value for key, value in node.items() if key != "allOf"}, {}
        merged_node, brought = self.merged(node["allOf"])
        if any(refs & inside for refs in brought.values()):
            return None
        return {**{key: node[key] for key in _DEFINITIONS if key in node}, **merged_node}, brought

    def merged(self, members: list[Any]) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
        """Return what ``_visit_all_of`` builds of ``members``: an enum or a closed object.

        With the references each property came by (the written name's).
        """
        properties: list[tuple[str, Any]] = []
        came_by: list[frozenset[str]] = []
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
                    came_by.append(seen)
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
            return {"enum": common}, {}
        return self.closed_object(properties, came_by, required)

    def closed_object(
        self, properties: list[tuple[str, Any]], came_by: list[frozenset[str]], required: set[str]
    ) -> tuple[dict[str, Any], dict[str, frozenset[str]]]:
        """Return the converter's object of ``properties``: required ones first, no others.

        A name listed twice is written twice, each time with its last schema (the
        converter keeps one rule per name); the second time under a stand-in name. With
        the references each written property came by (``came_by``, one per property).
        """
        last = {name: (sub, refs) for (name, sub), refs in zip(properties, came_by, strict=True)}
        names = [name for name, _ in properties]
        ordered = [n for n in names if n in required] + [n for n in names if n not in required]
        written: dict[str, Any] = {}
        brought: dict[str, frozenset[str]] = {}
        wanted: list[str] = []
        for name in ordered:
            key = name if name not in written else self.stand_in(name)
            written[key], brought[key] = last[name]
            if name in required:
                wanted.append(key)
        closed = {
            "type": "object",
            "properties": written,
            "required": wanted,
            "additionalProperties": False,
        }
        return closed, brought

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


def endless_all_of(schema: Any) -> str | None:
    """Return why llama.cpp's converter never finishes ``schema``, or None.

    The converter's ``visit`` stops at a ``$ref`` it is already resolving, but not at an
    ``allOf``: ``_visit_all_of`` takes its ``$ref`` members' properties (a chain of
    references followed to its end) and visits them. When those lead back to the same
    ``allOf`` without a plain ``$ref`` between, or a member's chain of references comes
    back to itself, the C++ converter recurses until it crashes (checked against a build
    of it). Only what the converter reaches from the root counts: a loop in a definition
    nothing refers to is never visited.

    Parameters
    ----------
    schema
        A JSON schema llama.cpp's schema builder takes (`_llama_builder.schema_error`).

    Returns
    -------
    str | None
        The reason, naming the ``allOf`` member's reference, as a prediction's error.
    """
    graph = _VisitGraph(schema)
    try:
        ref = graph.loop()
    except _EndlessChain as chain:
        return (
            f"llama.cpp's JSON-schema converter never finishes this schema: the allOf member "
            f'{{"$ref": "{chain.ref}"}} is a chain of references that comes back to itself, and '
            "the converter follows it without end (LM Studio's C++ converter crashes, out of "
            "stack). Point the member at a schema that is not a reference"
        )
    if ref is None:
        return None
    return (
        f"llama.cpp's JSON-schema converter never finishes this schema: the allOf member "
        f'{{"$ref": "{ref}"}} brings in properties that lead back to that allOf, and the '
        "converter writes it inside itself without end (LM Studio's C++ converter crashes, "
        f'out of stack). Write {{"$ref": "{ref}"}} without the allOf around it: the '
        "converter ends a recursion through a plain $ref"
    )


class _EndlessChain(Exception):
    """An ``allOf`` member's chain of references that comes back to itself."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref


class _VisitGraph:
    """The schemas llama.cpp's converter visits from each schema it reaches.

    A node is a schema (by identity); an edge is a visit. A ``$ref`` node's one edge, to
    its target, is the kind the converter stops at when it comes round again; the other
    edges (properties, items, alternatives, and the properties an ``allOf`` takes from its
    members) it always follows. So it never finishes if, and only if, the edges of the
    second kind make a cycle among the nodes it reaches (each reference's target is visited
    whole the first time).
    """

    def __init__(self, root: Any) -> None:
        self.root = root
        self.alternatives: dict[tuple[int, int], dict[str, Any]] = {}  # a type list's, kept

    def loop(self) -> str | None:
        """Return the reference of an ``allOf`` member on a cycle the converter reaches."""
        edges: dict[int, list[tuple[Any, str | None]]] = {}  # node -> (child, member's ref)
        order: list[Any] = []
        stack: list[Any] = [self.root]
        while stack:  # every node reached, by either kind of edge
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in edges:
                continue
            target, children = self.visits(node)
            edges[id(node)] = children
            order.append(node)
            stack.extend(child for child, _ in children)
            stack.append(target)
        state: dict[int, int] = {}  # 1: on the path, 2: done
        for start in order:
            if id(start) in state:
                continue
            state[id(start)] = 1
            path: list[tuple[int, Iterator[tuple[Any, str | None]], str | None]]
            path = [(id(start), iter(edges[id(start)]), None)]
            while path:
                key, pending, _ = path[-1]
                for child, via in pending:
                    if not isinstance(child, dict):
                        continue
                    seen = state.get(id(child))
                    if seen == 1:  # a cycle: the member's ref that closes it, or one on it
                        at = next(i for i, frame in enumerate(path) if frame[0] == id(child))
                        refs = [frame[2] for frame in path[at + 1 :]] + [via]
                        return next((ref for ref in refs if ref is not None), "")
                    if seen is None:
                        state[id(child)] = 1
                        path.append((id(child), iter(edges[id(child)]), via))
                        break
                else:
                    state[key] = 2
                    path.pop()
        return None

    def visits(self, node: dict[str, Any]) -> tuple[Any, list[tuple[Any, str | None]]]:
        """Return what the converter visits from ``node``: a ``$ref``'s target, the rest.

        Each of the rest with the reference of the ``allOf`` member it came from, if any.
        """
        kind = schema_kind(node)
        if kind == "$ref":
            ref = node["$ref"]
            return (local_target(ref, self.root) if isinstance(ref, str) else None), []
        if kind == "anyOf" and not _ALTERNATIVES & set(node):  # a type list
            return None, [(self.alternative(node, i), None) for i in range(len(node["type"]))]
        if kind == "anyOf":
            return None, [(alternative, None) for alternative in any_of_alternatives(node) or ()]
        if kind == "object":
            own = node.get("properties")
            children = list(own.values()) if isinstance(own, dict) else []
            children.append(node.get("additionalProperties"))
            return None, [(child, None) for child in children]
        if kind == "allOf":
            members = node["allOf"]
            return None, self.members(members) if isinstance(members, list) else []
        if kind is None and node.get("type") in (None, "array"):
            items = node["items"] if "items" in node else node.get("prefixItems")
            return None, [(item, None) for item in (items if isinstance(items, list) else [items])]
        return None, []

    def alternative(self, node: dict[str, Any], index: int) -> dict[str, Any]:
        """Return the node a type list's ``index``-th type makes (the same object each time)."""
        key = (id(node), index)
        if key not in self.alternatives:
            self.alternatives[key] = {**node, "type": node["type"][index]}
        return self.alternatives[key]

    def members(self, members: list[Any]) -> list[tuple[Any, str | None]]:
        """Return the properties ``_visit_all_of`` visits of ``members``, with their refs.

        Nothing when the members' enums have a value in common: it writes those instead.
        """
        taken: list[tuple[Any, str | None]] = []
        counts: dict[str, int] = {}  # an enum value's JSON text: how many times listed
        for member in members:
            alternatives = any_of_alternatives(member)
            for part in [member] if alternatives is None else alternatives:
                via: str | None = None
                chain: set[str] = set()
                while schema_kind(part) == "$ref":  # as add_component: no guard
                    ref = part["$ref"]
                    if not isinstance(ref, str):
                        break
                    if ref in chain:
                        raise _EndlessChain(ref)
                    chain.add(ref)
                    via = via or ref
                    part = local_target(ref, self.root)
                kind = schema_kind(part)
                own = part.get("properties") if kind == "object" else None
                if isinstance(own, dict):
                    taken.extend((sub, via) for sub in own.values())
                elif kind == "enum" and isinstance(part["enum"], list):
                    for value in part["enum"]:
                        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
                        counts[text] = counts.get(text, 0) + 1
        if any(count == len(members) for count in counts.values()):
            return []
        return taken


_ALTERNATIVES = frozenset({"oneOf", "anyOf"})
