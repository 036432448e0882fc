"""Timing harness: interleaved measurement, medians, targets and case results.

Each case compares *ours* with a *baseline* in the same process. Calls are
interleaved (ours, baseline, baseline, ours, ...) so that machine noise, the
emulator thread and the garbage collector hit both sides alike; medians are
taken over the per-call (or per-round) samples.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from outlines_lmstudio.testing import LMStudioEmulator

__all__ = [
    "FULL",
    "QUICK",
    "AsyncSide",
    "CaseResult",
    "Context",
    "Paired",
    "Side",
    "Sizes",
    "Stats",
    "Target",
    "ainterleave",
    "atimed",
    "cpu_summary",
    "interleave",
    "timed",
]

Side = Callable[[int], tuple[float, object]]
"""One side of a comparison: call ``i`` -> (seconds it took, result to compare)."""
AsyncSide = Callable[[int], Awaitable[tuple[float, object]]]
"""The async form of `Side`."""


@dataclass(frozen=True)
class Sizes:
    """How much work each case does."""

    requests: int = 500
    """Paired requests for the overhead and streaming cases (each side)."""
    async_requests: int = 400
    """Paired requests for the async overhead case (each side)."""
    outlines_requests: int = 200
    """Paired requests per output type against Outlines' adapter."""
    warmup: int = 20
    """Untimed calls per side before a per-request case."""
    batch_prompts: int = 32
    batch_rounds: int = 3
    batch_fragments: int = 10
    """Fragments in every scripted batch reply (all requests cost the same)."""
    token_latency: float = 0.015
    """Emulator seconds per fragment in the batch case."""
    image_prompts: int = 20
    image_rounds: int = 5
    image_size: tuple[int, int] = (1024, 768)
    import_runs: int = 12
    """Fresh interpreters per side in the import case."""


FULL = Sizes()
QUICK = Sizes(
    requests=120,
    async_requests=100,
    outlines_requests=50,
    warmup=10,
    batch_rounds=1,
    batch_fragments=5,
    token_latency=0.01,
    image_rounds=2,
    import_runs=4,
)


@dataclass
class Context:
    """What a case gets: the emulator's host and controls, the sizes and a logger."""

    emulator: LMStudioEmulator
    """The running emulator (shared by the cases; each resets it first)."""
    sizes: Sizes
    log: Callable[[str], None] = field(default=lambda message: None)


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of one side's samples, in the case's unit."""

    median: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, samples: list[float], scale: float = 1.0) -> Stats:
        """Summarise ``samples`` (multiplied by ``scale``, e.g. 1e3 for ms)."""
        if not samples:
            raise ValueError("no samples")
        values = sorted(s * scale for s in samples)
        if len(values) == 1:
            return cls(values[0], values[0], values[0], 1)
        p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), p25, p75, len(values))

    def to_json(self) -> dict[str, float | int]:
        return {"median": self.median, "p25": self.p25, "p75": self.p75, "n": self.n}


@dataclass(frozen=True)
class Target:
    """A goal on the ratio (or on ours' own value, e.g. an upload count)."""

    op: Literal["<=", ">=", "=="]
    value: float
    on: Literal["ratio", "ours"] = "ratio"

    def met(self, ratio: float, ours: float) -> bool:
        x = ratio if self.on == "ratio" else ours
        if self.op == "<=":
            return x <= self.value
        if self.op == ">=":
            return x >= self.value
        return x == self.value

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.value:g}"


@dataclass
class CaseResult:
    """One row of the table."""

    name: str
    title: str
    ours_label: str
    baseline_label: str
    unit: str
    ours: Stats
    baseline: Stats
    ratio_kind: Literal["ours/baseline", "baseline/ours"] = "ours/baseline"
    target: Target | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_ci: tuple[float, float] | None = None
    """95% bootstrap interval of the ratio (resampling the interleaved pairs)."""

    @classmethod
    def from_paired(
        cls,
        paired: Paired,
        *,
        name: str,
        title: str,
        ours: str,
        baseline: str,
        ratio_kind: Literal["ours/baseline", "baseline/ours"] = "ours/baseline",
        target: Target | None = None,
        extra: dict[str, Any] | None = None,
    ) -> CaseResult:
        """A result in milliseconds from interleaved samples (results compared)."""
        return cls(
            name=name,
            title=title,
            ours_label=ours,
            baseline_label=baseline,
            unit="ms",
            ours=Stats.of(paired.ours, 1e3),
            baseline=Stats.of(paired.baseline, 1e3),
            ratio_kind=ratio_kind,
            target=target,
            extra={**(extra or {}), "results_equal": paired.results_equal},
            ratio_ci=paired.ratio_ci(ratio_kind),
        )

    @property
    def ratio(self) -> float:
        if self.ratio_kind == "ours/baseline":
            return self.ours.median / self.baseline.median
        return self.baseline.median / self.ours.median

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.met(self.ratio, self.ours.median)

    @property
    def n(self) -> int:
        return min(self.ours.n, self.baseline.n)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ours": self.ours_label,
            "baseline": self.baseline_label,
            "unit": self.unit,
            "medians": {"ours": self.ours.median, "baseline": self.baseline.median},
            "ours_stats": self.ours.to_json(),
            "baseline_stats": self.baseline.to_json(),
            "ratio": self.ratio,
            "ratio_kind": self.ratio_kind,
            "ratio_ci95": None if self.ratio_ci is None else list(self.ratio_ci),
            "target": None if self.target is None else str(self.target),
            "pass": self.passed,
            "n": self.n,
            "extra": self.extra,
        }


@dataclass
class Paired:
    """Samples and results of an interleaved comparison."""

    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    ours_results: list[object] = field(default_factory=list)
    baseline_results: list[object] = field(default_factory=list)

    @property
    def results_equal(self) -> bool:
        return self.ours_results == self.baseline_results

    def ratio_ci(
        self, kind: Literal["ours/baseline", "baseline/ours"], resamples: int = 1000
    ) -> tuple[float, float] | None:
        """95% percentile-bootstrap interval of the ratio of medians (None below 20 pairs)."""
        n = min(len(self.ours), len(self.baseline))
        if n < 20:
            return None
        rng = random.Random(0)
        ratios = []
        for _ in range(resamples):
            picks = [rng.randrange(n) for _ in range(n)]
            ours = statistics.median(self.ours[i] for i in picks)
            base = statistics.median(self.baseline[i] for i in picks)
            ratios.append(ours / base if kind == "ours/baseline" else base / ours)
        ratios.sort()
        return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]

    def add(self, which: Literal["ours", "baseline"], sample: tuple[float, object]) -> None:
        seconds, result = sample
        if which == "ours":
            self.ours.append(seconds)
            self.ours_results.append(result)
        else:
            self.baseline.append(seconds)
            self.baseline_results.append(result)


def _order(i: int) -> tuple[Literal["ours", "baseline"], Literal["ours", "baseline"]]:
    return ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")


def interleave(ours: Side, baseline: Side, n: int, warmup: int = 0) -> Paired:
    """Run ``n`` calls of each side, alternating which goes first; return the samples.

    Warm-up calls get negative indexes and are not recorded.
    """
    sides = {"ours": ours, "baseline": baseline}
    for i in range(1, warmup + 1):
        ours(-i)
        baseline(-i)
    gc.collect()
    paired = Paired()
    for i in range(n):
        for which in _order(i):
            paired.add(which, sides[which](i))
    return paired


async def ainterleave(ours: AsyncSide, baseline: AsyncSide, n: int, warmup: int = 0) -> Paired:
    """The async form of `interleave`."""
    sides = {"ours": ours, "baseline": baseline}
    for i in range(1, warmup + 1):
        await ours(-i)
        await baseline(-i)
    gc.collect()
    paired = Paired()
    for i in range(n):
        for which in _order(i):
            paired.add(which, await sides[which](i))
    return paired


def timed(call: Callable[[], object], cpu: list[float] | None = None) -> tuple[float, object]:
    """Time one call: (wall seconds, its result); append its CPU seconds in this thread to ``cpu``.

    The calling thread's CPU time leaves out the waiting for the server and
    other processes, so it shows the client-side work with little noise.
    """
    cpu_start = time.thread_time()
    start = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.thread_time() - cpu_start)
    return elapsed, result


def cpu_summary(ours: list[float], baseline: list[float]) -> dict[str, float]:
    """Median CPU microseconds per call in the calling thread, each side and the difference."""
    o, b = statistics.median(ours) * 1e6, statistics.median(baseline) * 1e6
    return {"ours_us": round(o, 1), "baseline_us": round(b, 1), "extra_us": round(o - b, 1)}


async def atimed(
    call: Callable[[], Awaitable[object]], cpu: list[float] | None = None
) -> tuple[float, object]:
    """Time one awaited call, as `timed` does (run alone on its event loop)."""
    cpu_start = time.thread_time()
    start = time.perf_counter()
    result = await call()
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.thread_time() - cpu_start)
    return elapsed, result
