"""What a type checker sees of the public API: a user's code checked with ``mypy --strict``.

Found by a probe: the package's lazy ``__getattr__`` made every name (``from_lmstudo``)
type-check, every entry point returned ``Any``, and a plain ``for`` over the async
model's stream (which raises at run time) passed.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

GOOD = """
from typing import Any, assert_type

import lmstudio as lms
from outlines.inputs import Image
from pydantic import BaseModel

from outlines_lmstudio import (
    AsyncLMStudio,
    AsyncReplyStream,
    LMStudio,
    Parsed,
    Reply,
    ReplyChunk,
    ReplyStream,
    SyncReplyStream,
    from_lmstudio,
)
from outlines_lmstudio.testing import LMStudioEmulator, ToolCall


class Person(BaseModel):
    name: str


def sync(client: lms.Client, image: Image) -> None:
    model = from_lmstudio(client, "m", max_concurrency=2, timeout=None, grammar=True)
    assert_type(model, LMStudio)
    assert_type(model("x"), str)
    assert_type(model.generate("x", Person), str)
    assert_type(model.batch(["x"]), list[str])
    # Found by a probe: a tuple of inputs (a batch, as documented) was refused.
    assert_type(model.batch(("x", "y")), list[str])
    assert_type(model.generate_batch(("x", "y")), list[str])
    assert_type(model.reply_batch(("x", "y")), list[Reply])
    assert_type(model.parse("x", Person), Person)
    assert_type(model.parse("x", int, retries=1), int)
    assert_type(model.parse("x", list[Person]), list[Person])
    # Found by a probe: a list of prompts (always several inputs) was typed Any.
    assert_type(model.parse(["x", "y"], Person), list[Person])
    assert_type(model.parse(("x", "y"), Person), list[Person])
    # One input with an image: not typed on purpose (a probe with pyright asked for it, a
    # review found the lie): ["x", *images] with no images is a batch at run time.
    assert_type(model.parse(["x", image], Person), Any)
    assert_type(model.parse_reply("x", Person), Parsed[Person])
    assert_type(model.parse_reply("x", Person).value, Person)
    assert_type(model.parse_reply(["x", "y"], Person), list[Parsed[Person]])
    assert_type(model.reply("x"), Reply)
    assert_type(model.reply_batch(["x"]), list[Reply])
    for chunk in model.stream("x"):
        assert_type(chunk, str)
    model.stream("x").close()
    # Found by a probe: reply_stream's chunks were Any, its reply not narrowed.
    replies = model.reply_stream("x")
    for piece in replies:
        assert_type(piece, ReplyChunk)
    assert_type(replies.reply, Reply | None)
    replies.close()
    # Found by a probe: the documented ReplyStream could not annotate what it returns.
    annotated: SyncReplyStream = model.reply_stream("x")
    assert_type(text_of(annotated), str)
    either: ReplyStream = model.reply_stream("x")
    assert_type(either.reply, Reply | None)
    model.type_adapter.grammar = True  # found by a probe: typed as Outlines' base adapter
    model.timeout = 5


def scripts(emulator: LMStudioEmulator) -> None:
    emulator.script("m", "one text")
    emulator.script("m", ToolCall("add", {"a": 1}))  # found by a probe: refused statically
    emulator.script("m", ["a", ToolCall("add", {}), lambda prediction: "b"])


def text_of(stream: SyncReplyStream) -> str:
    return "".join(chunk.text for chunk in stream)


async def atext_of(stream: AsyncReplyStream) -> str:
    return "".join([chunk.text async for chunk in stream])


async def asynchronous(client: lms.AsyncClient) -> None:
    model = from_lmstudio(client)
    assert_type(model, AsyncLMStudio)
    assert_type(await model("x"), str)
    assert_type(await model.batch(["x"]), list[str])
    assert_type(await model.batch(("x", "y")), list[str])
    assert_type(await model.reply_batch(("x", "y")), list[Reply])
    assert_type(await model.parse("x", Person), Person)
    assert_type(await model.parse(["x", "y"], Person), list[Person])
    assert_type(await model.parse_reply("x", Person), Parsed[Person])
    assert_type(await model.parse_reply(["x", "y"], Person), list[Parsed[Person]])
    assert_type(await model.reply("x"), Reply)
    async for chunk in model.stream("x"):
        assert_type(chunk, str)
    await model.stream("x").aclose()
    replies = model.reply_stream("x")
    async for piece in replies:
        assert_type(piece, ReplyChunk)
    await replies.aclose()
    assert_type(await atext_of(model.reply_stream("x")), str)
    either: ReplyStream = model.reply_stream("x")
    assert_type(either.reply, Reply | None)
"""

BAD = """
import lmstudio as lms

import outlines_lmstudio
from outlines_lmstudio import AsyncLMStudio, LMStudio, from_lmstudo
from outlines_lmstudio.testing import LMStudioEmulator

x = outlines_lmstudio.LMStuido


def sync(model: LMStudio, client: lms.Client) -> None:
    n: int = model("x")
    s: str = model.parse("x", int)
    from_lmstudio_typo = outlines_lmstudio.from_lmstudio(client, max_concurency=8)


def asynchronous(model: AsyncLMStudio) -> None:
    for chunk in model.stream("x"):
        pass
    for piece in model.reply_stream("x"):
        pass


def settings(model: LMStudio, emulator: LMStudioEmulator) -> None:
    model.tmeout = 5
    emulator.token_latncy = 0.05


def classes(client: lms.Client, aclient: lms.AsyncClient) -> None:
    LMStudio(client, "m", timout=5)
    LMStudio(client, "m", 5)
    AsyncLMStudio(aclient, "m", max_concurency=2)
"""


def _mypy(tmp_path: Path, source: str) -> tuple[str, int]:
    path = tmp_path / "user.py"
    path.write_text(textwrap.dedent(source))
    limit = sys.getrecursionlimit()
    try:
        out, err, status = mypy_api.run(
            [
                "--strict",
                "--no-incremental",
                "--config-file",
                "",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--show-error-codes",
                str(path),
            ]
        )
    finally:
        # mypy raises the interpreter's recursion limit to 2**14 for good: the tests that
        # run after this one in the same worker then got no RecursionError where a user's
        # process does (the CLI's test of a regex nesting 1200 groups, found in a run).
        sys.setrecursionlimit(limit)
    return out + err, status


def test_the_public_api_is_typed(tmp_path: Path) -> None:
    output, status = _mypy(tmp_path, GOOD)
    assert status == 0, output


def test_misuse_is_caught_by_the_type_checker(tmp_path: Path) -> None:
    output, status = _mypy(tmp_path, BAD)
    assert status == 1, output
    errors = {
        (int(line), code)
        for line, code in re.findall(r"user\.py:(\d+): error: .*\[([a-z-]+)\]", output)
    }
    assert errors == {
        (5, "attr-defined"),  # from_lmstudo
        (8, "attr-defined"),  # outlines_lmstudio.LMStuido
        (12, "assignment"),  # int from model(...)
        (13, "assignment"),  # str from parse(..., int)
        (14, "call-overload"),  # max_concurency
        (18, "attr-defined"),  # a plain for over an async stream
        (20, "attr-defined"),  # the same over an async reply_stream (found by a probe)
        (25, "attr-defined"),  # a misspelt setting (found by a probe: silently stored)
        (26, "attr-defined"),  # the same on the emulator (found by a probe)
        # Found by a probe: the classes took any option (from_lmstudio's overloads did not)
        (30, "call-arg"),  # timout
        (31, "arg-type"),  # an option by position
        (32, "call-arg"),  # max_concurency
    }, output
