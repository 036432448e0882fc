"""Python function calls per call: ours against the SDK by hand, counted, not timed.

The timing ratios move from run to run with the machine (the intervals of one run
are about 0.03 wide). The number of Python functions a call runs does not, and on
this kind of machine it is what our overhead is made of: the SDK's own calls and
ours run interleaved, with cold CPU caches, at about 2 µs a Python call. So this
case counts them with ``cProfile`` (every Python function entered, in the calling
thread) over the same calls as ``overhead.sync``, ``parse`` and ``stream.ttff`` (the
stream up to its first fragment), and reports the ratio and how many of ours are
our own package's functions.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

from benchmarks._common import Person, person_format, prompt, sync_sides
from benchmarks._harness import CaseResult, Context, Metric, Stats
from benchmarks._remote import Script

__all__ = ["count_calls", "profiled", "run"]

PACKAGE = "outlines_lmstudio"


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
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    python = package = 0
    for (path, _, _), (_, calls, *_) in stats.items():
        if path == "~":  # a builtin (C) function
            continue
        python += calls
        if f"{PACKAGE}/" in path.replace("\\", "/"):
            package += calls
    return python / n, package / n, results


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
    """Count ours and the SDK's Python calls for a whole call, ``parse`` and a first fragment."""
    n = max(ctx.sizes.requests // 10, 10)
    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))
    fmt = person_format()
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
                *_first_fragments(model, handle, fmt),
            ),
        }
        results = []
        for name, (title, ours, sdk) in sides.items():
            ctx.log(f"{name}: {n} calls per side, counted")
            count_calls(ours, 5, n)  # warm-up: caches filled, handles resolved
            count_calls(sdk, 5, n)
            ours_calls, own, ours_results = count_calls(ours, n)
            sdk_calls, _, sdk_results = count_calls(sdk, n)
            result = _result(ctx, name, title, ours_calls, own, sdk_calls)
            result.checks["results_equal"] = ours_results == sdk_results
            results.append(result)
    return results


def _first_fragments(
    model: Any, handle: Any, fmt: dict[str, Any]
) -> tuple[Callable[[int, cProfile.Profile], str], Callable[[int, cProfile.Profile], str]]:
    """Both sides of a stream counted up to its first fragment (the rest read uncounted)."""

    def ours(i: int, profile: cProfile.Profile) -> str:
        profile.enable()
        chunks = iter(model.stream(prompt(i), Person))
        first: str = next(chunks)
        profile.disable()
        return first + "".join(chunks)

    def sdk(i: int, profile: cProfile.Profile) -> str:
        profile.enable()
        fragments = iter(handle.respond_stream(prompt(i), response_format=fmt))
        first: str = next(fragments).content
        profile.disable()
        return first + "".join(f.content for f in fragments)

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
