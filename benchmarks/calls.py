"""Python function calls per call: ours against the SDK by hand, counted, not timed.

The timing ratios move from run to run with the machine (the intervals of one run
are about 0.03 wide). The number of Python functions a call runs does not, and on
this kind of machine it is what our overhead is made of: the SDK's own calls and
ours run interleaved, with cold CPU caches, at about 2 µs a Python call. So this
case counts them with ``cProfile`` (every Python function entered, in the calling
thread) over the same calls as ``overhead.sync``, ``parse``, ``stream.ttff`` (the
stream up to its first fragment), ``image.reuse`` (an image already uploaded) and
``overhead.async``, and reports the ratio and how many of ours are our own
package's functions. An async call counts what the event loop runs until it
returns, the SDK's websocket tasks included, on both sides alike.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
from collections.abc import Awaitable, Callable
from typing import Any

import lmstudio as lms

from benchmarks._common import (
    TEXT_MODEL,
    VISION_MODEL,
    Person,
    make_image,
    make_image_bytes,
    person_format,
    prompt,
    sync_sides,
)
from benchmarks._harness import CaseResult, Context, Metric, Stats, sent_schema
from benchmarks._remote import Script
from outlines_lmstudio import from_lmstudio

__all__ = ["acount_calls", "count_calls", "profiled", "run"]

PACKAGE = "outlines_lmstudio"
FIELDS = len(Person.model_fields)
WARMUP = 5
"""Uncounted calls per side before the counted ones."""


def count_calls(
    call: Callable[[int, cProfile.Profile], Any], n: int, start: int = 0
) -> tuple[float, float, list[Any]]:
    """Count the Python function calls of ``n`` calls; ``call(i, profile)`` enables it.

    Returns
    -------
    tuple
        Python function calls per call, how many of them are this package's
        functions, and the calls' results.
    """
    profile = cProfile.Profile()
    results = [call(i, profile) for i in range(start, start + n)]
    return (*_tally(profile, n), results)


async def acount_calls(
    work: Callable[[int], Awaitable[Any]], n: int, start: int = 0
) -> tuple[float, float, list[Any]]:
    """`count_calls` for ``await work(i)``: everything the thread runs until it returns.

    That is the event loop's work for the call too (the SDK's websocket tasks run in the
    caller's loop), on both sides alike.
    """
    profile = cProfile.Profile()
    results = []
    for i in range(start, start + n):
        profile.enable()
        try:
            results.append(await work(i))
        finally:
            profile.disable()
    return (*_tally(profile, n), results)


def _tally(profile: cProfile.Profile, n: int) -> tuple[float, float]:
    """Python function calls per call, and how many of them are this package's."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    python = package = 0
    for (path, _, _), (_, calls, *_) in stats.items():
        if path == "~":  # a builtin (C) function
            continue
        python += calls
        if f"{PACKAGE}/" in path.replace("\\", "/"):
            package += calls
    return python / n, package / n


def profiled(work: Callable[[int], Any]) -> Callable[[int, cProfile.Profile], Any]:
    """Make ``work(i)`` a counted call: only the call itself is profiled."""

    def call(i: int, profile: cProfile.Profile) -> Any:
        profile.enable()
        try:
            return work(i)
        finally:
            profile.disable()

    return call


def run(ctx: Context) -> list[CaseResult]:
    """Count ours and the SDK's Python calls in each case the module docstring lists."""
    n = max(ctx.sizes.requests // 10, 10)
    fmt = person_format()
    chunks: dict[str, list[int]] = {"ours": [], "sdk": []}
    with sync_sides(ctx.emulator.api_host) as (model, handle):

        def respond(i: int) -> str:
            return handle.respond(prompt(i), response_format=fmt).content

        sides = {
            "calls.sync": (
                "model(prompt, Person) vs handle.respond(prompt, response_format=fmt)",
                profiled(lambda i: model(prompt(i), Person)),
                profiled(respond),
            ),
            "calls.parse": (
                "model.parse(prompt, Person) vs Person.model_validate_json(respond(...))",
                profiled(lambda i: model.parse(prompt(i), Person)),
                profiled(lambda i: Person.model_validate_json(respond(i))),
            ),
            "calls.stream_first": (
                "model.stream(prompt, Person) vs handle.respond_stream(...), to the first fragment",
                *_first_fragments(model, handle, fmt, chunks),
            ),
        }
        results = []
        for name, parts in sides.items():
            ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))  # its records only
            results.append(_counted(ctx, name, *parts, n, fields=FIELDS))
    # a stream, not the whole reply in one piece: as many chunks as the SDK's fragments
    stream_first = next(r for r in results if r.name == "calls.stream_first")
    stream_first.checks["chunks"] = chunks["ours"] == chunks["sdk"] and set(chunks["sdk"]) == {
        ctx.sizes.short_fragments
    }
    return [*results, _image_case(ctx, n), _async_case(ctx, n)]


def _counted(
    ctx: Context,
    name: str,
    title: str,
    ours: Callable[[int, cProfile.Profile], Any],
    sdk: Callable[[int, cProfile.Profile], Any],
    n: int,
    *,
    fields: int | None = None,
) -> CaseResult:
    """Count both sides; with ``fields``, check that every call sent the schema (`_sent`)."""
    ctx.log(f"{name}: {n} calls per side, counted")
    count_calls(ours, WARMUP, n)  # warm-up: caches filled, handles resolved, uploads done
    count_calls(sdk, WARMUP, n)
    ours_calls, own, ours_results = count_calls(ours, n)
    sdk_calls, _, sdk_results = count_calls(sdk, n)
    result = _result(ctx, name, title, ours_calls, own, sdk_calls)
    result.checks["results_equal"] = ours_results == sdk_results
    if fields is not None:
        result.checks["schema_sent"] = _sent(ctx, n, fields)
    return result


def _sent(ctx: Context, n: int, fields: int) -> bool:
    """The reply is scripted: every call of both sides (warm-up included) since the last
    reset sent the SDK by hand's schema, of ``fields`` properties."""
    return sent_schema(ctx.emulator.stats(), 2 * (WARMUP + n), fields)


def _image_case(ctx: Context, n: int) -> CaseResult:
    """The same image in every prompt: ours against the SDK's chat with its ``FileHandle``."""
    data = make_image_bytes(ctx.sizes.image_sizes[0])
    ctx.emulator.reset(Script("vision"), models=(VISION_MODEL,))
    image = make_image(data)
    with lms.Client(ctx.emulator.api_host) as client:
        model = from_lmstudio(client, VISION_MODEL)
        handle = client.llm.model(VISION_MODEL)
        file_handle = client.files.prepare_image(data, name="picture.jpg")

        def sdk(i: int) -> str:
            chat = lms.Chat()
            chat.add_user_message(prompt(i), images=[file_handle])
            return handle.respond(chat).content

        title = "model([prompt, image]) vs handle.respond(chat with the same FileHandle)"
        ours = profiled(lambda i: model([prompt(i), image]))
        return _counted(ctx, "calls.image_reuse", title, ours, profiled(sdk), n)


def _async_case(ctx: Context, n: int) -> CaseResult:
    """``await model(prompt, Person)`` against ``await handle.respond(...)``."""
    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))
    ctx.log(f"calls.async: {n} calls per side, counted")

    async def both() -> tuple[tuple[float, float, list[Any]], tuple[float, float, list[Any]]]:
        async with lms.AsyncClient(ctx.emulator.api_host) as client:
            model = from_lmstudio(client, TEXT_MODEL)
            handle = await client.llm.model(TEXT_MODEL)
            fmt = person_format()

            async def ours(i: int) -> Any:
                return await model(prompt(i), Person)

            async def sdk(i: int) -> str:
                return (await handle.respond(prompt(i), response_format=fmt)).content

            await acount_calls(ours, WARMUP, n)
            await acount_calls(sdk, WARMUP, n)
            return await acount_calls(ours, n), await acount_calls(sdk, n)

    (ours_calls, own, ours_results), (sdk_calls, _, sdk_results) = asyncio.run(both())
    title = "await model(prompt, Person) vs await handle.respond(prompt, response_format=fmt)"
    result = _result(ctx, "calls.async", title, ours_calls, own, sdk_calls)
    result.checks["results_equal"] = ours_results == sdk_results
    result.checks["schema_sent"] = _sent(ctx, n, FIELDS)
    return result


def _first_fragments(
    model: Any, handle: Any, fmt: dict[str, Any], chunks: dict[str, list[int]]
) -> tuple[Callable[[int, cProfile.Profile], str], Callable[[int, cProfile.Profile], str]]:
    """Both sides of a stream counted up to its first fragment (the rest read uncounted).

    Each side's number of pieces per stream goes to ``chunks["ours"]`` / ``chunks["sdk"]``.
    """

    def ours(i: int, profile: cProfile.Profile) -> str:
        profile.enable()
        pieces = iter(model.stream(prompt(i), Person))
        first: str = next(pieces)
        profile.disable()
        rest = list(pieces)
        chunks["ours"].append(1 + len(rest))
        return first + "".join(rest)

    def sdk(i: int, profile: cProfile.Profile) -> str:
        profile.enable()
        fragments = iter(handle.respond_stream(prompt(i), response_format=fmt))
        first: str = next(fragments).content
        profile.disable()
        rest = [f.content for f in fragments]
        chunks["sdk"].append(1 + len(rest))
        return first + "".join(rest)

    return ours, sdk


def _result(ctx: Context, name: str, title: str, ours: float, own: float, sdk: float) -> CaseResult:
    ours_label, baseline_label = title.split(" vs ", 1)
    metrics = []
    if ctx.timing:
        metrics.append(
            Metric(
                "Python calls",
                ours / sdk,
                None,
                None,
                "calls",
                Stats(ours, ours, ours, 1),
                Stats(sdk, sdk, sdk, 1),
            )
        )
    return CaseResult(
        name=name,
        title=title,
        ours_label=ours_label,
        baseline_label=baseline_label,
        metrics=metrics,
        extra={"python_calls": {"ours": ours, "sdk": sdk, "ours_own_functions": own}},
    )
