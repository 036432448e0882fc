"""JSON objects read with one value per key (pure, no I/O).

Python's ``json`` (and Pydantic) keep a repeated key's last value and drop the others
without a word: a reply's first value was then never validated (``{"age": -1, "age": 3}``),
and a file the command line reads lost a setting. `without_repeats`, as the
``object_pairs_hook``, refuses the object instead. Hand-written: ``json`` has no option for
it, and neither Pydantic nor msgspec reports a repeated key.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RepeatedKey", "without_repeats"]


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
