"""Case 6: ``from outlines_lmstudio import from_lmstudio`` against ``import outlines, lmstudio``.

The package loads its model classes (and with them Outlines and the SDK) on first use, so
``import outlines_lmstudio`` alone would measure almost nothing: the statement imports
what a user's first line imports. What only some programs use loads when first used, and
is not in this measure: the async front (with the first ``lmstudio.AsyncClient`` model),
the JSON-schema modules (with the first schema planned) and typed results (``parse``).

Each sample is a fresh interpreter (``python -c``), alternating sides; the
ratio is on the wall-clock time of the whole process. Kept as extra
information: the time of the import statement alone (reported by the child)
and the CPU time (user + sys) of the child, which waiting for a busy CPU does
not inflate.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

from benchmarks._harness import CaseResult, Context, Metric, Sample, Target, interleave

__all__ = ["run"]

OURS = "from outlines_lmstudio import from_lmstudio"
BASELINE = "import outlines, lmstudio"
DEFERRED = "import outlines_lmstudio._async, outlines_lmstudio._typed, outlines_lmstudio._dialects"
"""What loads on first use (the async front, typed results, the schema modules): reported."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(statement: str, first: str = "") -> tuple[float, float, float]:
    """Run ``statement`` in a fresh interpreter: wall, import-only and CPU (user+sys) seconds.

    Bytecode caching is left on (as for an installed wheel): the warm-up run writes
    the ``.pyc`` files of an editable checkout, so no sample compiles source.
    """
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    if first:  # time `statement` after `first` instead
        code = f"{first}; {code}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cpu = _children_cpu()
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    wall = time.perf_counter() - start
    return wall, float(out.stdout.strip()), _children_cpu() - cpu


def run(ctx: Context) -> list[CaseResult]:
    """Fresh-process import time, ours vs outlines + lmstudio."""
    n = ctx.sizes.import_runs
    inner: dict[str, list[float]] = {"ours": [], "baseline": []}
    cpu: dict[str, list[float]] = {"ours": [], "baseline": []}

    def side(name: str, statement: str) -> Sample:
        wall, alone, used = _child(statement)
        inner[name].append(alone)
        cpu[name].append(used)
        return Sample(wall, used)

    ctx.log(f"import: {n} fresh interpreters per side")
    paired = interleave(
        lambda i: side("ours", OURS), lambda i: side("baseline", BASELINE), n, warmup=1
    )
    deferred = [_child(DEFERRED, OURS)[1] for _ in range(max(n // 4, 3))]
    # Warm-up samples went to `inner` and `cpu` too: drop them.
    alone = {k: v[1:] for k, v in inner.items()}
    used = {k: v[1:] for k, v in cpu.items()}
    return [
        CaseResult(
            name="import",
            title="fresh-process import time",
            ours_label=f'python -c "{OURS}"',
            baseline_label=f'python -c "{BASELINE}"',
            metrics=[
                *paired.metrics(Target("<=", 1.10), cpu_target=False),
                Metric.ratio("import statement", alone["ours"], alone["baseline"]),
            ]
            if ctx.timing
            else [],
            extra={
                "import_statement_ms": {k: statistics.median(v) * 1e3 for k, v in alone.items()},
                "process_cpu_ms": {k: statistics.median(v) * 1e3 for k, v in used.items()},
                "deferred_to_first_use_ms": statistics.median(deferred) * 1e3,
            },
        )
    ]
