"""The benchmark runner: ``python -m benchmarks [--quick] [--only NAME ...]``.

Starts one LM Studio emulator (4 slots), runs each case against it, prints a
Markdown table of medians and ratios and writes the results as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import batch, images, imports, overhead, streaming, vs_outlines
from benchmarks._harness import FULL, QUICK, CaseResult, Context, Sizes
from benchmarks._machine import machine_info

if TYPE_CHECKING:
    from outlines_lmstudio.testing import LMStudioEmulator

__all__ = [
    "CASES",
    "END",
    "START",
    "docs_section",
    "format_table",
    "main",
    "report",
    "run_cases",
    "update_docs",
]

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

CASES: dict[str, Callable[[Context], list[CaseResult]]] = {
    "overhead": overhead.run,
    "overhead-async": overhead.run_async,
    "outlines": vs_outlines.run,
    "batch": batch.run,
    "batch-async": batch.run_async,
    "images": images.run,
    "stream": streaming.run,
    "import": imports.run,
}
"""Case groups in run order (``--only`` takes these names)."""


def run_cases(
    names: Sequence[str],
    sizes: Sizes,
    log: Callable[[str], None] = print,
    emulator: LMStudioEmulator | None = None,
) -> list[CaseResult]:
    """Run the named case groups against ``emulator`` (a new one with 4 slots if None)."""
    if emulator is None:
        from outlines_lmstudio.testing import LMStudioEmulator

        with LMStudioEmulator(slots=4) as started:
            return run_cases(names, sizes, log, started)
    results: list[CaseResult] = []
    ctx = Context(emulator=emulator, sizes=sizes, log=log)
    for name in names:
        start = time.perf_counter()
        results.extend(CASES[name](ctx))
        log(f"  {name} done in {time.perf_counter() - start:.1f} s")
    return results


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def format_table(results: Sequence[CaseResult]) -> str:
    """A Markdown table of the results."""
    lines = [
        "| case | ours | baseline | ours median | baseline median | ratio | 95% CI "
        "| target | result | n |",
        "|---|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    for r in results:
        verdict = {True: "pass", False: "**MISS**", None: "-"}[r.passed]
        ratio = f"{r.ratio:.3f}" + (" (speedup)" if r.ratio_kind == "baseline/ours" else "")
        ci = "-" if r.ratio_ci is None else f"{r.ratio_ci[0]:.3f} - {r.ratio_ci[1]:.3f}"
        lines.append(
            f"| {r.name} | `{r.ours_label}` | `{r.baseline_label}` "
            f"| {_number(r.ours.median)} {r.unit} | {_number(r.baseline.median)} {r.unit} "
            f"| {ratio} | {ci} | {r.target or '-'} | {verdict} | {r.n} |"
        )
    return "\n".join(lines)


def report(
    results: Sequence[CaseResult], sizes: Sizes, *, mode: str, elapsed: float, command: str
) -> dict[str, Any]:
    """The JSON document of a run: machine, sizes and one entry per case."""
    return {
        "mode": mode,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_s": round(elapsed, 1),
        "command": command,
        "machine": machine_info(),
        "sizes": asdict(sizes),
        "cases": [r.to_json() for r in results],
        "table": format_table(results),
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
    cpu = [
        f"{c['name']} {c['extra']['caller_thread_cpu']['ours_us']:.0f} vs "
        f"{c['extra']['caller_thread_cpu']['baseline_us']:.0f} µs"
        for c in payload["cases"]
        if "caller_thread_cpu" in c["extra"]
    ]
    if cpu:
        lines += ["", "CPU time of the calling thread per request, ours vs baseline: "]
        lines[-1] += "; ".join(cpu) + "."
    for c in payload["cases"]:
        if "process_cpu_ratio" in c["extra"]:
            lines += [
                "",
                f"Import, CPU time (user + sys) of the fresh process: ratio "
                f"{c['extra']['process_cpu_ratio']:.3f}; the import statement alone: "
                f"{c['extra']['import_statement_ratio']:.3f}.",
            ]
    return "\n".join(lines)


def update_docs(path: Path, payload: dict[str, Any]) -> None:
    """Replace the text between the result markers of ``path`` with this run."""
    text = path.read_text()
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    path.write_text(f"{head}{START}\n{docs_section(payload)}\n{END}{tail}")


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.json")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return 1 with ``--strict`` if a target was missed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about 20 s)")
    parser.add_argument(
        "--only", nargs="+", choices=list(CASES), metavar="CASE", help=f"among {list(CASES)}"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="JSON results path (default: benchmarks/results/latest.json, "
        "or quick.json with --quick)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument(
        "--update-docs", action="store_true", help=f"put the table into {DOCS.name} as well"
    )
    parser.add_argument(
        "--docs-from",
        type=Path,
        metavar="JSON",
        help=f"only rewrite the table in {DOCS.name} from a saved run, then exit",
    )
    args = parser.parse_args(argv)
    if args.docs_from is not None:
        update_docs(DOCS, json.loads(args.docs_from.read_text()))
        return 0
    sizes = QUICK if args.quick else FULL
    names = args.only or list(CASES)
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")

    start = time.perf_counter()
    results = run_cases(names, sizes)
    elapsed = time.perf_counter() - start
    table = format_table(results)
    print()
    print(table)
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    mode = "quick" if args.quick else "full"
    payload = report(results, sizes, mode=mode, elapsed=elapsed, command=command)
    _write(output, payload)
    if args.update_docs:
        update_docs(DOCS, payload)
    print(f"\n{len(results)} results in {elapsed:.0f} s, written to {output}")
    missed = [r.name for r in results if r.passed is False]
    if missed:
        print(f"Missed targets: {', '.join(missed)}")
    return 1 if args.strict and missed else 0
