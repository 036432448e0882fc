"""JSON objects read with one value per key (pure, no I/O).

Python's ``json`` (and Pydantic) keep a repeated key's last value and drop the others
without a word: a reply's first value was then never validated (``{"age": -1, "age": 3}``),
and a file the command line reads lost a setting. `without_repeats`, as the
``object_pairs_hook``, refuses the object instead. Hand-written: ``json`` has no option for
it, and neither Pydantic nor msgspec reports a repeated key.
"""

from __future__ import annotations

import json
from typing import Any

from ._schema_walk import pointer_token

__all__ = ["RepeatedKey", "repeated_at", "without_repeats"]


class RepeatedKey(Exception):
    """A JSON object names a key twice (its ``args[0]``)."""


def without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a repeated key: ``json.loads``' ``object_pairs_hook``.

    Parameters
    ----------
    pairs
        The object's key and value pairs, in order.

    Returns
    -------
    dict
        The object.

    Raises
    ------
    RepeatedKey
        For the first key named twice.
    """
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return data


class _Pairs(list[tuple[str, Any]]):
    """An object's pairs as written, repeats kept (`repeated_at`)."""


def repeated_at(text: str, *, pointer: bool = False) -> str:
    """Return where the first object that `without_repeats` refuses is.

    The object ``json.loads`` finishes first (an inner one before the object holding it):
    ``pet`` for ``{"pet": {"lives": 1, "lives": 2}}``, ``xs.0`` for a list's item,
    ``(root)`` for the document (and for text that cannot be read whole). Read again only
    for this (the error path).

    Parameters
    ----------
    text
        JSON text in which `without_repeats` found a key named twice.
    pointer
        Say it as a JSON pointer (``/pet``, ``/xs/0``, ``/`` for the document), as a
        schema's other errors do (a review: the dotted path of a reply's errors is
        ambiguous for a key with a dot).
    """
    steps = _repeated_steps(text)
    if pointer:
        return "/" + "/".join(map(pointer_token, steps))
    return ".".join(map(str, steps)) or "(root)"


def _repeated_steps(text: str) -> tuple[str | int, ...]:
    """Return the keys and indexes that lead to `repeated_at`'s object (``()``: the root)."""
    try:
        document = json.loads(text, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return ()
    stack: list[tuple[tuple[str | int, ...], Any, bool]] = [((), document, False)]
    while stack:  # depth first, children before their object, as json.loads finishes them
        path, node, seen = stack.pop()
        if isinstance(node, _Pairs):
            if seen:
                try:
                    without_repeats(node)
                except RepeatedKey:
                    return path
                continue
            children = [((*path, key), value) for key, value in node]
        elif isinstance(node, list):  # nothing to check once its items are: not pushed back
            # (it was, and came back unchecked for good: `parse` hung on a key repeated after
            # a list; found by a probe)
            items = [((*path, index), value) for index, value in enumerate(node)]
            stack.extend((child, value, False) for child, value in reversed(items))
            continue
        else:
            continue
        stack.append((path, node, True))
        stack.extend((child, value, False) for child, value in reversed(children))
    return ()
