"""The benchmark runner: ``python -m benchmarks [--quick] [--only NAME ...] [--update-docs]``.

Starts one LM Studio emulator (4 slots) in its own process, runs each case
against it, prints a Markdown table (and the scale curves) and writes the
results as JSON. ``--quick`` checks correctness only (equal results, order,
upload counts, what each call sent, the pieces of each stream), with tiny sizes and
no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import (
    batch,
    calls,
    engine,
    images,
    imports,
    memory,
    overhead,
    scale,
    vs_outlines,
)
from benchmarks._harness import FULL, QUICK, SHORT, CaseResult, Context, Metric, Sizes
from benchmarks._machine import machine_info
from benchmarks._remote import RemoteEmulator
from benchmarks._sections import replace_section

__all__ = [
    "CASES",
    "CURVES_END",
    "CURVES_START",
    "END",
    "START",
    "curves",
    "docs_section",
    "format_curves",
    "format_table",
    "main",
    "report",
    "run_cases",
    "update_docs",
]

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
CURVES_START, CURVES_END = "<!-- curves:start -->", "<!-- curves:end -->"

CASES: dict[str, Callable[[Context], list[CaseResult]]] = {
    "overhead": overhead.run,
    "overhead-async": overhead.run_async,
    "stream": overhead.run_stream,
    "parse": overhead.run_parse,
    "calls": calls.run,
    "parse-stream": scale.run_parse_stream,
    "images": images.run,
    "schema": scale.run_schema,
    "history": scale.run_history,
    "batch": batch.run,
    "batch-async": batch.run_async,
    "efficiency": batch.run_efficiency,
    "batch-loop": batch.run_vs_loop,
    "memory": memory.run,
    "outlines": vs_outlines.run,
    "outlines-image": vs_outlines.run_images,
    "import": imports.run,
    "engine": engine.run,
}
"""Case groups in run order (``--only`` takes these names)."""


def run_cases(
    names: Sequence[str],
    sizes: Sizes,
    *,
    timing: bool = True,
    log: Callable[[str], None] = print,
    emulator: RemoteEmulator | None = None,
) -> list[CaseResult]:
    """Run the named case groups against ``emulator`` (a new one, 4 slots, if None)."""
    if emulator is None:
        with RemoteEmulator(slots=4) as started:
            return run_cases(names, sizes, timing=timing, log=log, emulator=started)
    results: list[CaseResult] = []
    ctx = Context(emulator=emulator, sizes=sizes, timing=timing, log=log)
    for name in names:
        start = time.perf_counter()
        try:
            results.extend(CASES[name](ctx))
        except Exception as exc:
            # Found by a probe: a check that could not read what a broken library returned
            # (a reply that was no Person) ended the run with a traceback, no table, no file.
            error = f"{type(exc).__name__}: {exc}"
            log(f"  {name} FAILED: {error}")
            failed = CaseResult(name, f"{name} (raised)", "-", "-", checks={"completed": False})
            failed.extra["error"] = error
            results.append(failed)
            continue
        log(f"  {name} done in {time.perf_counter() - start:.1f} s")
    return results


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**MISS**", None: "-"}[passed]


def _metric_verdict(metric: Metric) -> str:
    """A metric's result cell: pass, **MISS**, no interval (no verdict), or - (no target)."""
    verdict = metric.verdict
    return "**MISS**" if verdict == "miss" else verdict or "-"


def format_table(results: Sequence[CaseResult]) -> str:
    """A Markdown table: one row per metric (wall, CPU, ...), checks in the last column.

    Without any metric (``--quick``), one row per case with its checks.
    """
    if not any(r.metrics for r in results):
        lines = ["| case | ours | baseline | checks |", "|---|---|---|---|"]
        for r in results:
            checks = ", ".join(f"{k} {'ok' if v else '**FAILED**'}" for k, v in r.checks.items())
            if r.skipped:
                checks = f"**SKIPPED**: {r.skipped}"
            lines.append(
                f"| {r.name} | `{r.ours_label}` | `{r.baseline_label}` | {checks or '-'} |"
            )
        return "\n".join(lines)
    lines = [
        "| case | ours | baseline | metric | ours median | baseline median | ratio | 95% CI "
        "| target | result | checks |",
        "|---|---|---|---|---:|---:|---:|---|---|---|---|",
    ]
    for r in results:
        failed = r.failed_checks
        checks = "ok" if r.checks and not failed else ("-" if not r.checks else "**FAILED**: ")
        checks += ", ".join(failed)
        if r.skipped:
            checks = f"**SKIPPED**: {r.skipped}"
        head = f"| {r.name} | `{r.ours_label}` | `{r.baseline_label}` "
        tail = f" | {checks} |"
        if not r.metrics:
            lines.append(head + f"| - | - | - | - | - | - | {_verdict(r.passed)}" + tail)
        for k, m in enumerate(r.metrics):
            if k:
                head, tail = "| | | ", " | |"
            ci = "-" if m.ci is None else f"{m.ci[0]:.3f} - {m.ci[1]:.3f}"
            ours = "-" if m.ours is None else f"{_number(m.ours.median)} {m.unit}"
            base = "-" if m.baseline is None else f"{_number(m.baseline.median)} {m.unit}"
            lines.append(
                head + f"| {m.name} | {ours} | {base} | {m.value:.3f} | {ci} "
                f"| {m.target or '-'} | {_metric_verdict(m)}" + tail
            )
    return "\n".join(lines)


def curves(results: Sequence[CaseResult]) -> dict[str, dict[str, Any]]:
    """The scale curves: per curve, its points and the fitted growth exponent of each side."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        name = r.extra.get("curve")
        if not isinstance(name, str):
            continue
        if "ours_points" in r.extra:  # memory: RSS at checkpoints, one run per side
            ours = dict(r.extra["ours_points"])
            sdk = dict(r.extra["sdk_points"])
            points = [
                {"x": x, "ours": ours[x] / 1e6, "baseline": sdk.get(x, float("nan")) / 1e6}
                for x in sorted(ours)
            ]
            out[name] = {"unit": "MB RSS", "points": points}
            continue
        point = {
            "x": r.extra["x"],
            "ours": statistics.median(r.extra["ours_wall"]) * 1e3,
            "baseline": statistics.median(r.extra["baseline_wall"]) * 1e3,
        }
        if "ours_cpu" in r.extra:
            point["ours_cpu"] = statistics.median(r.extra["ours_cpu"]) * 1e3
            point["baseline_cpu"] = statistics.median(r.extra["baseline_cpu"]) * 1e3
        out.setdefault(name, {"unit": "ms", "points": []})["points"].append(point)
    for curve in out.values():
        xs = [p["x"] for p in curve["points"]]
        for side in ("ours", "baseline"):
            if curve["unit"] == "MB RSS":  # growth after the first checkpoint
                ys = [p[side] - curve["points"][0][side] for p in curve["points"]]
                curve[f"{side}_exponent"] = scale.fit_exponent(xs[1:], ys[1:])
            else:
                curve[f"{side}_exponent"] = scale.fit_exponent(
                    xs, [p[side] for p in curve["points"]]
                )
    return out


def _exponent_caveat(name: str, curve: dict[str, Any]) -> str:
    """Where a curve's fitted exponent means little, why (said next to it)."""
    points = curve["points"]
    if curve["unit"] == "MB RSS" and len(points) > 1:
        kb = [round((points[-1][s] - points[0][s]) * 1e3) for s in ("ours", "baseline")]
        if max(abs(k) for k in kb) < 1000:
            return (
                f". The growth after the first checkpoint is {kb[0]} kB (ours) and {kb[1]} kB "
                f"(baseline) over {_number(points[-1]['x'] - points[0]['x'])} calls, allocator "
                "noise: the exponent means nothing here"
            )
    if name.startswith("history"):
        return (
            ". A fixed cost per call plus a cost per message is not a power law: the exponent "
            "only says the fixed cost weighs most at these sizes; read the ratios"
        )
    return ""


def format_curves(data: dict[str, dict[str, Any]]) -> str:
    """Markdown tables of the scale curves with their fitted growth exponents."""
    if not data:
        return "(no curve in this run)"
    parts = []
    for name, curve in data.items():
        unit = curve["unit"]
        is_batch = name.startswith("batch size")
        ours_h, base_h = ("batch", "ideal") if is_batch else ("ours", "baseline")
        lines = [
            f"**{name}**: growth exponent (log-log fit over the points) "
            f"{ours_h} {curve['ours_exponent']:.2f}, {base_h} {curve['baseline_exponent']:.2f}"
            + (" (of the RSS growth after the first checkpoint)" if unit == "MB RSS" else "")
            + _exponent_caveat(name, curve),
            "",
            f"| x | {ours_h} ({unit}) | {base_h} ({unit}) | "
            + ("efficiency |" if is_batch else "ratio |"),
            "|---:|---:|---:|---:|",
        ]
        for p in curve["points"]:
            ratio = p["baseline"] / p["ours"] if is_batch else p["ours"] / p["baseline"]
            lines.append(
                f"| {_number(p['x'])} | {_number(p['ours'])} | {_number(p['baseline'])} "
                f"| {ratio:.3f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def report(
    results: Sequence[CaseResult],
    sizes: Sizes,
    *,
    mode: str,
    elapsed: float,
    command: str,
    groups: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON document of a run: machine, sizes, the case groups run, each case, curves."""
    return {
        "mode": mode,
        "groups": list(groups),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(elapsed, 1),
        "command": command,
        "machine": machine_info(),
        "sizes": asdict(sizes),
        "cases": [r.to_json() for r in results],
        "table": format_table(results),
        "curves": curves(results),
    }


def docs_section(payload: dict[str, Any]) -> str:
    """The Markdown put between the result markers of ``docs/benchmarks.md``."""
    machine = payload["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    load = machine.get("loadavg")
    lines = [
        f"Run `{payload['command']}` on {payload['created']} ({payload['mode']} sizes, "
        f"{payload['elapsed_s']:.0f} s, commit {machine.get('commit') or 'unknown'}).",
        "",
        f"- Machine: {machine['nproc']} CPUs (`nproc`), {machine['cpu_model']}, "
        f"{machine['platform']}"
        + (f"; load average {load[0]:.2f} at the end of the run" if load else ""),
        f"- Python {machine['python']} ({machine['python_implementation']})",
        f"- Packages: {packages}",
        "",
        payload["table"],
    ]
    extra = [
        f"{c['name']} {c['extra']['extra_per_call']['cpu_us']:.0f} µs CPU, "
        f"{c['extra']['extra_per_call']['wall_us']:.0f} µs wall "
        f"({c['extra']['fragments_per_reply']} fragments a reply)"
        for c in payload["cases"]
        if c["extra"].get("extra_per_call")
    ]
    if extra:
        lines += ["", "Our extra cost per call over the SDK by hand (medians): " + "; ".join(extra)]
        lines[-1] += "."
    per_fragment = [
        f"{c['name'].rsplit('.', 1)[1]} fragments {us['cpu_us']:.2f}"
        for c in payload["cases"]
        if (us := c["extra"].get("extra_us_per_fragment"))
    ]
    if per_fragment:
        lines += [
            "",
            "parse_stream's extra CPU per fragment over stream + model_validate_json "
            "(µs, medians; flat means linear): " + "; ".join(per_fragment) + ".",
        ]
    return "\n".join(lines)


def results_heading(payload: dict[str, Any]) -> str:
    """The heading of the results section: which commit and day the table comes from."""
    commit = payload["machine"].get("commit") or "unknown"
    return f"## Latest results: commit {commit}, {str(payload['created'])[:10]}"


def update_docs(path: Path, payload: dict[str, Any]) -> None:
    """Replace the results and the curves between their markers in ``path``, and the results'
    heading (nothing else)."""
    heading = results_heading(payload)
    replace_section("results", heading, docs_section(payload), path)
    text = path.read_text(encoding="utf-8")
    path.write_text(
        re.sub(r"^## Latest results\b.*$", heading, text, count=1, flags=re.MULTILINE),
        encoding="utf-8",
    )
    if payload.get("curves"):
        replace_section("curves", "## Scale curves", format_curves(payload["curves"]), path)


def _unwritable(path: Path) -> str:
    """Say why the results cannot be written to ``path`` ("" if they can)."""
    if path.exists() and not path.is_file():
        return "not a regular file (the results replace it: give a file path)"
    if path.is_symlink():
        return "a symbolic link (the results would replace the link: give its target)"
    parent = path.parent
    while not parent.exists():  # _write makes the missing folders
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        return f"{parent} is not a folder this process can write in"
    # Tried, with a name of its own (no file of the user's touched): os.access says yes on
    # /proc, and the results were lost after the run (found by a probe and a review).
    try:
        if parent == path.parent:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".benchmarks-", suffix=".json"):
                pass
        else:  # _write makes the missing folders under `parent`
            os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".benchmarks-"))
    except OSError as exc:
        return f"cannot be written in {parent} ({exc.strerror or exc})"
    return ""


def _saved_run(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """Read a run saved by ``--output``, for ``--docs-from``; refuse one that is not full."""
    try:
        payload = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        parser.error(f"--docs-from {path}: cannot read a saved run: {exc}")
    if not isinstance(payload, dict) or "table" not in payload or "mode" not in payload:
        parser.error(f"--docs-from {path}: not a run saved by python -m benchmarks")
    groups = payload.get("groups")
    if groups is None:  # saved before runs recorded their groups: its command says
        partial = any(a.startswith("--on") for a in str(payload.get("command", "")).split())
    else:
        partial = not set(CASES) <= set(groups)
    if payload["mode"] != "full" or partial:
        what = "a run of some case groups only" if partial else f"a {payload['mode']} run"
        parser.error(
            f"--docs-from {path}: {what} ({payload.get('command')!r}); the docs publish full "
            "runs of every case"
        )
    skipped = _skipped(
        (str(c.get("name")), str((c.get("extra") or {}).get("skipped") or ""))
        for c in payload.get("cases") or []
        if isinstance(c, dict)
    )
    if skipped:
        parser.error(
            f"--docs-from {path}: a run that skipped {skipped}; the docs publish full runs of "
            "every case"
        )
    if raised := _raised(payload.get("cases") or []):
        parser.error(
            f"--docs-from {path}: a run whose case groups raised: {raised}; the docs publish "
            "full runs of every case"
        )
    try:  # what the docs are written from (found by a probe: no "machine" was a KeyError)
        docs_section(payload)
        results_heading(payload)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        parser.error(
            f"--docs-from {path}: not a run saved by python -m benchmarks (cannot read its "
            f"{type(exc).__name__}: {exc})"
        )
    return payload


def _raised(cases: Iterable[Any]) -> str:
    """The case groups of saved ``cases`` that raised, with their errors ("" if none).

    Such a run lacks the group's cases: it is not published (found by a review: the docs
    were rewritten without them).
    """
    return "; ".join(
        f"{case.get('name')} ({case['extra']['error']})"
        for case in cases
        if isinstance(case, dict)
        and isinstance(case.get("extra"), dict)
        and case["extra"].get("error")
    )


def _skipped(cases: Iterable[tuple[str, str]]) -> str:
    """The skipped cases of ``(name, why skipped or "")`` pairs, with why ("" if none)."""
    return "; ".join(f"{name} ({why})" for name, why in cases if why)


def _write(path: Path, payload: dict[str, Any]) -> None:
    """Write the results whole or not at all, through a file of a name of its own.

    With the mode a new file gets (the umask's), or the file's own when it is replaced: a
    temporary file is made private (0600), which a review found the results had become.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".benchmarks-", suffix=".json", delete=False
    ) as tmp:
        tmp.write(json.dumps(payload, indent=2) + "\n")
    os.chmod(tmp.name, mode)
    os.replace(tmp.name, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 if a correctness check failed (or, with --strict, a target).

    Also 1 when a case was skipped (the engine case without llama-cpp-python or its model)
    with ``--strict``, or with ``--update-docs``: the docs are then left as they are.
    """
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="correctness only: tiny sizes, no timing (for CI)"
    )
    parser.add_argument(
        "--short", action="store_true", help="timed, with smaller samples (a few minutes)"
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(CASES), metavar="CASE", help=f"among {list(CASES)}"
    )
    parser.add_argument(
        "--calls", type=int, help=f"sequential calls of the memory case (default {FULL.calls})"
    )
    parser.add_argument(
        "--engine-threads",
        type=int,
        help="llama.cpp threads on both sides of the engine case (default: the engine's own)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON results path (default: benchmarks/results/latest.json, "
        "or quick.json with --quick)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if a target is missed or a case skipped"
    )
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help=f"put the table and the scale curves into {DOCS.name} as well",
    )
    parser.add_argument(
        "--docs-from",
        type=Path,
        metavar="JSON",
        help=f"only rewrite the table and curves in {DOCS.name} from a saved run, then exit",
    )
    args = parser.parse_args(argv)
    if args.docs_from is not None:
        payload = _saved_run(parser, args.docs_from)
        update_docs(DOCS, payload)
        return 0
    if args.update_docs and (args.quick or args.short or args.only):
        parser.error(
            "--update-docs publishes a full run (every case, full sizes): drop --quick, "
            "--short and --only, or publish a saved full run with --docs-from"
        )
    sizes = QUICK if args.quick else SHORT if args.short else FULL
    if args.calls is not None:
        if args.calls < 1:
            parser.error("--calls must be at least 1")
        sizes = Sizes(**{**asdict(sizes), "calls": args.calls})
    if args.engine_threads is not None:
        if args.engine_threads < 1:
            parser.error("--engine-threads must be at least 1")
        sizes = Sizes(**{**asdict(sizes), "engine_threads": args.engine_threads})
    names = list(dict.fromkeys(args.only or CASES))  # a group named twice runs once
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")
    problem = _unwritable(output)
    if problem:  # said now, not after a run of many minutes
        parser.error(f"--output {output}: {problem}")
    if args.update_docs and (problem := engine.unavailable()):  # also said now
        parser.error(
            f"--update-docs publishes a run of every case, and the engine case cannot run "
            f"here: {problem}"
        )

    start = time.perf_counter()
    results = run_cases(names, sizes, timing=not args.quick)
    elapsed = time.perf_counter() - start
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    mode = "quick" if args.quick else "short" if args.short else "full"
    payload = report(results, sizes, mode=mode, elapsed=elapsed, command=command, groups=names)
    print()
    print(payload["table"])
    if payload["curves"] and not args.quick:
        print()
        print(format_curves(payload["curves"]))
    _write(output, payload)
    skipped = _skipped((r.name, r.skipped) for r in results)
    raised = _raised(r.to_json() for r in results)
    if args.update_docs and not skipped and not raised:
        update_docs(DOCS, payload)
    print(f"\n{len(results)} results in {elapsed:.0f} s, written to {output}")
    if skipped:
        print(f"Skipped: {skipped}")
    if args.update_docs and (skipped or raised):
        print(f"{DOCS.name} not updated: the docs publish full runs of every case")
    broken = [f"{r.name} ({', '.join(r.failed_checks)})" for r in results if r.failed_checks]
    missed = [r.name for r in results if r.passed is False and not r.failed_checks]
    if broken:
        print(f"Failed correctness checks: {'; '.join(broken)}")
    if missed:
        print(f"Missed targets: {', '.join(missed)}")
    unjudged = [r.name for r in results if any(m.verdict == "no interval" for m in r.metrics)]
    if unjudged:
        print(f"No interval, so no verdict (fewer than 6 samples a side): {', '.join(unjudged)}")
    failed = (
        bool(broken)
        or (args.strict and bool(missed or skipped))
        or (args.update_docs and bool(skipped))
    )
    return 1 if failed else 0
