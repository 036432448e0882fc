"""RSS growth over many sequential calls, ours against the SDK by hand in the same loop.

Each side runs in a fresh interpreter (``python -m benchmarks.memory``) so that
neither inherits the other's allocations: it warms up, then makes ``calls``
sequential calls, reading its resident set size (after ``gc.collect()``) at ten
checkpoints. The target: ours grows at most 1 MB more than the SDK.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks._common import TEXT_MODEL, Person, person_format, prompt
from benchmarks._harness import CaseResult, Context, Metric, Target, sent_schema
from benchmarks._remote import Script

__all__ = ["TARGET_BYTES", "rss_bytes", "run"]

TARGET_BYTES = 1_000_000
WARMUP = 200
"""Untimed calls before the first reading (fewer when ``calls`` is smaller)."""
ROOT = Path(__file__).resolve().parent.parent


def _warmup(calls: int) -> int:
    return min(WARMUP, calls)


def rss_bytes() -> int:
    """This process's resident set size (Linux ``/proc``; else the peak from ``getrusage``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _loop(side: str, api_host: str, calls: int) -> dict[str, object]:  # pragma: no cover
    import lmstudio as lms

    from outlines_lmstudio import from_lmstudio

    with lms.Client(api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        handle = client.llm.model(TEXT_MODEL)
        fmt = person_format()

        def call(i: int) -> str:
            if side == "ours":
                return str(model(prompt(i), Person))
            return handle.respond(prompt(i), response_format=fmt).content

        for i in range(_warmup(calls)):
            call(i)
        gc.collect()
        start = rss_bytes()
        points = [(0, start)]
        step = max(1, calls // 10)
        last = ""
        for i in range(1, calls + 1):
            last = call(i)
            if i % step == 0 or i == calls:
                gc.collect()
                points.append((i, rss_bytes()))
    return {"side": side, "calls": calls, "points": points, "last": last}


def _child(side: str, api_host: str, calls: int) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", side, api_host, str(calls)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
        cwd=ROOT,
        env=env,
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def run(ctx: Context) -> list[CaseResult]:
    """RSS growth after ``Sizes.calls`` calls, each side in its own interpreter."""
    calls = ctx.sizes.calls
    ctx.emulator.reset(Script("person", ctx.sizes.short_fragments))
    ctx.log(f"memory: {calls} sequential calls per side, each in a fresh interpreter")
    ours = _child("ours", ctx.emulator.api_host, calls)
    sdk = _child("sdk", ctx.emulator.api_host, calls)
    stats = ctx.emulator.stats()

    def growth(side: dict[str, object]) -> int:
        points = side["points"]
        assert isinstance(points, list)
        return int(points[-1][1] - points[0][1])

    difference = growth(ours) - growth(sdk)
    metrics = []
    if ctx.timing:
        metrics.append(
            Metric(
                "RSS growth over the SDK's (MB)",
                difference / 1e6,
                None,
                Target("<=", TARGET_BYTES / 1e6),
                "MB",
                single=True,
            )
        )
    return [
        CaseResult(
            name="memory.rss",
            title=f"RSS growth over {calls} sequential calls",
            ours_label="model(prompt, Person) in a loop",
            baseline_label="handle.respond(prompt, response_format=fmt) in a loop",
            metrics=metrics,
            checks={
                "all_calls_made": stats.predictions == 2 * (calls + _warmup(calls)),
                "same_last_reply": ours["last"] == sdk["last"],
                # the reply is scripted: every call of both sides sent the same Person schema
                "schema_sent": sent_schema(
                    stats, 2 * (calls + _warmup(calls)), len(Person.model_fields)
                ),
            },
            extra={
                "calls": calls,
                "growth_bytes": {"ours": growth(ours), "sdk": growth(sdk)},
                "curve": "sequential calls vs RSS",
                "ours_points": ours["points"],
                "sdk_points": sdk["points"],
            },
        )
    ]


if __name__ == "__main__":  # pragma: no cover - the child side of `run`
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["ours", "sdk"])
    parser.add_argument("api_host")
    parser.add_argument("calls", type=int)
    args = parser.parse_args()
    print(json.dumps(_loop(args.side, args.api_host, args.calls)))
