"""What docs/output-types.md says of Outlines' own LM Studio model, checked against it.

The comparison table's ``outlines.models.lmstudio`` column is a claim about another
library; each row is run here through ``outlines.from_lmstudio`` on the emulator (and
through ours, which must take it), so the table cannot drift from what Outlines does.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import lmstudio as lms
import outlines
import pydantic
import pytest
from genson import SchemaBuilder
from outlines.types import JsonSchema

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL

TABLE = Path(__file__).parents[2] / "docs" / "output-types.md"


class Person(pydantic.BaseModel):
    name: str


class Node(pydantic.BaseModel):
    children: list[Node] = []


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = "red"


def genson_builder() -> SchemaBuilder:
    builder = SchemaBuilder()
    builder.add_object({"a": 1})
    return builder


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

# A table row (by the start of its first cell) -> output types to try, and for the rows
# whose Outlines cell says something for some of them only, those that fail in the SDK.
ROWS: dict[str, tuple[list[Any], list[Any]]] = {
    "`None`": ([None], []),
    "Pydantic model": (
        [Person, Point, genson_builder(), JsonSchema(Person), Node],
        [Node],  # the recursive model
    ),
    "JSON schema as a dict or str": ([SCHEMA, '{"type": "integer"}'], []),
    "`Union[A, B]`": ([Person | Point, list[Person]], []),
    "`Literal`": ([Literal["a", "b"], Colour], []),
    "`bool`": ([bool, int, float, str], []),
    "`date`": ([datetime.date, datetime.time, datetime.datetime], []),
    "`list`/`tuple`": ([list[int], tuple[int, str], dict[str, int], int | None], []),
    "`Annotated": ([Annotated[int, pydantic.Field(ge=1, le=5)]], []),
}


def outlines_cells() -> dict[str, str]:
    cells = {}
    for line in TABLE.read_text().splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) == 3:
            cells[parts[0]] = parts[1]
    return cells


def test_the_rows_are_in_the_table() -> None:
    cells = outlines_cells()
    for row in ROWS:
        assert [c for c in cells if c.startswith(row)], row


@pytest.mark.parametrize("row", sorted(ROWS))
def test_outlines_own_model_does_what_the_table_says(
    client: lms.Client, emulator: LMStudioEmulator, row: str
) -> None:
    (cell,) = [v for k, v in outlines_cells().items() if k.startswith(row)]
    output_types, sdk_failures = ROWS[row]
    theirs = outlines.from_lmstudio(client, TEXT_MODEL)
    ours = from_lmstudio(client, TEXT_MODEL)
    for output_type in output_types:
        emulator.reset()
        if output_type in sdk_failures:
            assert re.search(r"fails in the SDK", cell), (row, cell)
            with pytest.raises(lms.LMStudioError):
                theirs("q", output_type)
        elif cell.startswith("`TypeError`"):
            with pytest.raises(TypeError, match="not supported by LMStudio"):
                theirs("q", output_type)
            assert emulator.predictions == []  # (it looks the model up first)
        else:
            assert cell.startswith("yes"), (row, cell)
            assert isinstance(theirs("q", output_type), str)
        assert isinstance(ours("q", output_type), str)  # and ours takes every one
