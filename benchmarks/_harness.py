"""Timing harness: interleaved samples, whole-process CPU, intervals, targets, checks.

Each case compares *ours* with a *baseline* in the same process, the emulator
running in another (`benchmarks._remote`). Every sample records the wall time
and the CPU time of the whole process (``time.process_time``: the calling
thread, the SDK's background threads and ours). Calls are interleaved (ours,
baseline, baseline, ours, ...) so that machine noise and the garbage collector
hit both sides alike. A target is met only if the whole 95% bootstrap interval
of the ratio of medians is on the right side of it (its upper end for ``<=``,
its lower end for ``>=``); with no interval (fewer than 6 samples a side) there
is no verdict (`Metric.verdict`).
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks._remote import RemoteEmulator, ServerStats

__all__ = [
    "FULL",
    "QUICK",
    "SHORT",
    "AsyncSide",
    "CaseResult",
    "Context",
    "Metric",
    "Paired",
    "Sample",
    "Side",
    "Sizes",
    "Stats",
    "Target",
    "ainterleave",
    "ameasure",
    "bootstrap_ci",
    "interleave",
    "measure",
    "sent_alike",
    "sent_schema",
]


@dataclass(frozen=True)
class Sample:
    """One timed call: wall seconds, process CPU seconds and the call's result."""

    wall: float
    cpu: float
    result: object = None


Side = Callable[[int], Sample]
"""One side of a comparison: call ``i`` -> its `Sample`."""
AsyncSide = Callable[[int], Awaitable[Sample]]
"""The async form of `Side`."""


def measure(call: Callable[[], object]) -> Sample:
    """Time one call: wall and whole-process CPU seconds, and its result."""
    cpu = time.process_time()
    start = time.perf_counter()
    result = call()
    wall = time.perf_counter() - start
    return Sample(wall, time.process_time() - cpu, result)


async def ameasure(call: Callable[[], Awaitable[object]]) -> Sample:
    """Time one awaited call, as `measure` does (run alone on its event loop)."""
    cpu = time.process_time()
    start = time.perf_counter()
    result = await call()
    wall = time.perf_counter() - start
    return Sample(wall, time.process_time() - cpu, result)


@dataclass(frozen=True)
class Sizes:
    """How much work each case does."""

    requests: int = 1200
    """Paired requests per side in the per-request cases."""
    warmup: int = 30
    """Untimed calls per side before a per-request case."""
    short_fragments: int = 5
    """Fragments of a short reply (the overhead cases)."""
    stream_fragments: tuple[int, ...] = (250, 500, 1000, 2000)
    """Reply lengths of the parse_stream / stream comparison."""
    stream_requests: int = 60
    """Paired streams per side and reply length in parse_stream (60: at 30, the interval of a
    ratio near 1.0 was about 0.13 wide, wider than the effect measured)."""
    image_uses: int = 20
    """Uses of the same image per round (the 1st is not timed)."""
    image_rounds: int = 14
    image_sizes: tuple[tuple[int, int], ...] = (
        (1224, 816),
        (1936, 1296),
        (2736, 1824),
        (3872, 2592),
    )
    """Image sizes of the curve (1, 2.5, 5 and 10 MP); the last one is the target case."""
    schema_fields: tuple[int, ...] = (10, 50, 100, 250, 500)
    schema_rounds: int = 12
    history_lengths: tuple[int, ...] = (11, 101, 1001)
    history_requests: int = 240
    batch_size: int = 64
    batch_rounds: int = 12
    batch_fragments: int = 10
    token_latency: float = 0.004
    """Emulator seconds per fragment in the batch cases."""
    efficiency_sizes: tuple[int, ...] = (1, 8, 64, 512)
    efficiency_rounds: int = 8
    """Rounds at the largest batch size; the smaller (cheaper) sizes get twice as many."""
    calls: int = 10_000
    """Sequential calls of the memory case."""
    import_runs: int = 40
    engine_tokens: int = 128
    """Tokens per prediction of the real-engine case."""
    engine_rounds: int = 8
    engine_threads: int = 0
    """llama.cpp threads on both sides (0: the engine's default, ``min(4, cpu_count)``)."""


FULL = Sizes()
SHORT = Sizes(
    requests=150,
    warmup=10,
    stream_requests=8,
    image_rounds=2,
    image_uses=10,
    schema_rounds=6,
    history_requests=20,
    batch_rounds=6,
    efficiency_rounds=2,
    calls=2000,
    import_runs=6,
    engine_tokens=32,
    engine_rounds=3,
)
"""Timed, but smaller samples (a few minutes): to try the machinery, not for the record."""
QUICK = Sizes(
    requests=6,
    warmup=1,
    stream_fragments=(20, 40),
    stream_requests=2,
    image_uses=3,
    image_rounds=1,
    image_sizes=((64, 48),),
    schema_fields=(5, 20),
    schema_rounds=1,
    history_lengths=(5, 21),
    history_requests=2,
    batch_size=9,
    batch_rounds=1,
    batch_fragments=6,
    # Each reply takes 120 ms, so the check that a batch runs 4 at once holds on a loaded
    # machine: at 1 ms a fragment, the suite under pytest-xdist saw only 3 overlap.
    token_latency=0.02,
    efficiency_sizes=(1, 9),
    efficiency_rounds=1,
    calls=40,
    import_runs=1,
    engine_tokens=16,
    engine_rounds=2,
)


@dataclass
class Context:
    """What a case gets: the emulator, the sizes, whether to time, and a logger."""

    emulator: RemoteEmulator
    sizes: Sizes
    timing: bool = True
    """False (``--quick``): check correctness only; no timing metrics, no verdicts on them."""
    log: Callable[[str], None] = field(default=lambda message: None)


@dataclass(frozen=True)
class Stats:
    """Median and quartiles of samples, in the metric's unit."""

    median: float
    p25: float
    p75: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float], scale: float = 1.0) -> Stats:
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
    """A goal on a metric's value."""

    op: Literal["<=", ">=", "=="]
    value: float

    def met(self, value: float, ci: tuple[float, float] | None) -> bool:
        """Whether the value (the unfavourable end of ``ci`` when given) meets the goal.

        `Metric.passed` asks only with an interval, or for a single measurement.
        """
        if self.op == "<=":
            return (value if ci is None else ci[1]) <= self.value
        if self.op == ">=":
            return (value if ci is None else ci[0]) >= self.value
        return value == self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


def bootstrap_ci(
    ours: Sequence[float],
    baseline: Sequence[float],
    statistic: Callable[[float, float], float] = lambda o, b: o / b,
    resamples: int = 1000,
) -> tuple[float, float] | None:
    """95% percentile-bootstrap interval of ``statistic(median(ours), median(baseline))``.

    Equal-length inputs are taken as interleaved pairs and resampled together;
    otherwise each side is resampled on its own. None below 6 samples a side.
    """
    if min(len(ours), len(baseline)) < 6:
        return None
    rng = random.Random(0)
    paired = len(ours) == len(baseline)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(len(ours)) for _ in ours]
        other = picks if paired else [rng.randrange(len(baseline)) for _ in baseline]
        values.append(
            statistic(
                statistics.median(ours[i] for i in picks),
                statistics.median(baseline[i] for i in other),
            )
        )
    values.sort()
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


@dataclass(frozen=True)
class Metric:
    """One measured quantity of a case, usually a ratio ours / baseline.

    Attributes
    ----------
    name
        ``"wall"``, ``"cpu"``, ``"efficiency"``, ...
    value
        The ratio of medians (or the quantity itself).
    ci
        Its 95% bootstrap interval (None with too few samples).
    ours, baseline
        Each side's samples, summarised in ``unit``.
    single
        One measurement, not a sample (``memory.rss``): judged on its value, as there is
        nothing to resample. A sampled metric without an interval (fewer than 6 samples a
        side, as with ``--short``) gets no verdict: "no interval", neither pass nor miss.
    """

    name: str
    value: float
    ci: tuple[float, float] | None = None
    target: Target | None = None
    unit: str = ""
    ours: Stats | None = None
    baseline: Stats | None = None
    single: bool = False

    @property
    def passed(self) -> bool | None:
        """Whether the target is met; None without a target or (a sampled metric) an interval."""
        if self.target is None or (self.ci is None and not self.single):
            return None
        return self.target.met(self.value, self.ci)

    @property
    def verdict(self) -> str | None:
        """``"pass"``, ``"miss"``, ``"no interval"``, or None without a target."""
        if self.target is None:
            return None
        if self.passed is None:
            return "no interval"
        return "pass" if self.passed else "miss"

    @classmethod
    def ratio(
        cls,
        name: str,
        ours: Sequence[float],
        baseline: Sequence[float],
        target: Target | None = None,
        *,
        unit: str = "ms",
        scale: float = 1e3,
    ) -> Metric:
        """The ratio of medians ours / baseline with its interval and both sides' stats."""
        o, b = Stats.of(ours, scale), Stats.of(baseline, scale)
        return cls(
            name,
            o.median / b.median,
            bootstrap_ci(ours, baseline),
            target,
            unit,
            o,
            b,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "ci95": None if self.ci is None else list(self.ci),
            "target": None if self.target is None else str(self.target),
            "pass": self.passed,
            "verdict": self.verdict,
            "unit": self.unit,
            "ours": None if self.ours is None else self.ours.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
        }


@dataclass
class CaseResult:
    """One row of the table: metrics (timing runs only) and correctness checks."""

    name: str
    title: str
    ours_label: str
    baseline_label: str
    metrics: list[Metric] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    """Correctness: equal results, order, upload counts (checked in every mode)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        verdicts = [m.passed for m in self.metrics if m.passed is not None]
        verdicts += list(self.checks.values())
        return None if not verdicts else all(verdicts)

    @property
    def failed_checks(self) -> list[str]:
        return [name for name, ok in self.checks.items() if not ok]

    @property
    def skipped(self) -> str:
        """Why the case did not run (``extra["skipped"]``), or "" if it ran."""
        return str(self.extra.get("skipped") or "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "ours": self.ours_label,
            "baseline": self.baseline_label,
            "metrics": [m.to_json() for m in self.metrics],
            "checks": self.checks,
            "pass": self.passed,
            "extra": self.extra,
        }


@dataclass
class Paired:
    """Interleaved samples of both sides."""

    ours: list[Sample] = field(default_factory=list)
    baseline: list[Sample] = field(default_factory=list)

    def wall(self, side: Literal["ours", "baseline"]) -> list[float]:
        return [s.wall for s in getattr(self, side)]

    def cpu(self, side: Literal["ours", "baseline"]) -> list[float]:
        return [s.cpu for s in getattr(self, side)]

    def results(self, side: Literal["ours", "baseline"]) -> list[object]:
        return [s.result for s in getattr(self, side)]

    @property
    def results_equal(self) -> bool:
        return bool(self.ours) and self.results("ours") == self.results("baseline")

    def metrics(self, target: Target | None = None, *, cpu_target: bool = True) -> list[Metric]:
        """Wall and CPU ratios (``target`` on both, or on wall only)."""
        return [
            Metric.ratio("wall", self.wall("ours"), self.wall("baseline"), target),
            Metric.ratio(
                "cpu", self.cpu("ours"), self.cpu("baseline"), target if cpu_target else None
            ),
        ]

    def curve(self, name: str, x: float) -> dict[str, Any]:
        """The samples of one point of a scale curve (kept in a case's ``extra``)."""
        return {
            "curve": name,
            "x": x,
            "ours_wall": self.wall("ours"),
            "baseline_wall": self.wall("baseline"),
            "ours_cpu": self.cpu("ours"),
            "baseline_cpu": self.cpu("baseline"),
        }

    def extra_us(self) -> dict[str, float]:
        """Median extra microseconds per call, ours minus baseline (wall and CPU)."""
        return {
            "wall_us": round(
                (statistics.median(self.wall("ours")) - statistics.median(self.wall("baseline")))
                * 1e6,
                1,
            ),
            "cpu_us": round(
                (statistics.median(self.cpu("ours")) - statistics.median(self.cpu("baseline")))
                * 1e6,
                1,
            ),
        }


def _order(i: int) -> tuple[Literal["ours", "baseline"], Literal["ours", "baseline"]]:
    return ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours")


def interleave(ours: Side, baseline: Side, n: int, warmup: int = 0) -> Paired:
    """Run ``n`` calls of each side, alternating which goes first.

    Warm-up calls get indexes ``n, n + 1, ...`` and are not recorded.
    """
    sides = {"ours": ours, "baseline": baseline}
    for i in range(n, n + warmup):
        ours(i)
        baseline(i)
    gc.collect()
    paired = Paired()
    for i in range(n):
        for which in _order(i):
            getattr(paired, which).append(sides[which](i))
    return paired


def sent_alike(records: Sequence[str], n: int, warmup: int = 0) -> bool:
    """Whether both sides of an `interleave` run sent the same thing, call for call.

    ``records`` are the server's records of the run's predictions, oldest first (one per
    call: the calls are sequential, so they arrive in the order `interleave` makes them).
    True when there is one record per call, none empty, and ours' equal the baseline's
    in order.
    """
    order = [side for _ in range(warmup) for side in ("ours", "baseline")]
    order += [side for i in range(n) for side in _order(i)]
    if len(records) != len(order) or "" in records:
        return False
    ours = [r for r, side in zip(records, order, strict=True) if side == "ours"]
    baseline = [r for r, side in zip(records, order, strict=True) if side == "baseline"]
    return ours == baseline


def sent_schema(stats: ServerStats, calls: int, fields: int) -> bool:
    """Whether each of ``calls`` predictions sent one and the same JSON schema of ``fields``.

    For the cases whose calls are all of one output type, with no order to pair them by (a
    batch runs its calls at once): the emulator's reply does not depend on the request, so
    a call that dropped its output type (no JSON schema sent) or sent another one would
    still get the scripted reply. True when the emulator recorded exactly ``calls``
    predictions, each with a structured setting, all equal as JSON (so, when the SDK by hand
    is among them, ours sent what it sends), and a schema of ``fields`` properties.
    """
    records = stats.structured
    return (
        len(records) == calls
        and len(set(records)) == 1
        and records[0] != ""
        and set(stats.schema_properties) == {fields}
    )


async def ainterleave(ours: AsyncSide, baseline: AsyncSide, n: int, warmup: int = 0) -> Paired:
    """The async form of `interleave`."""
    sides = {"ours": ours, "baseline": baseline}
    for i in range(n, n + warmup):
        await ours(i)
        await baseline(i)
    gc.collect()
    paired = Paired()
    for i in range(n):
        for which in _order(i):
            getattr(paired, which).append(await sides[which](i))
    return paired
