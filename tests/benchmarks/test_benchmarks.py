"""The benchmark itself: every case runs with tiny sizes and compares like with like.

No timing is asserted: only that both sides of each case got the same (distinct,
ordered) results, that uploads and fragments are counted, that the checks can
fail, and that the report and the docs have what they promise.
"""

import asyncio
import json
import math
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from benchmarks._common import (
    Person,
    Roster,
    person_id,
    person_reply,
    prompt,
    prompt_id,
    roster_reply,
    wide_model,
)
from benchmarks._harness import (
    QUICK,
    CaseResult,
    Metric,
    Paired,
    Sample,
    Side,
    Stats,
    Target,
    bootstrap_ci,
    interleave,
    sent_alike,
    sent_schema,
)
from benchmarks._remote import RemoteEmulator, Script, ServerStats
from benchmarks.calls import acount_calls, count_calls, profiled
from benchmarks.run import (
    CASES,
    CURVES_END,
    CURVES_START,
    END,
    START,
    curves,
    format_curves,
    format_table,
    main,
    report,
    run_cases,
    update_docs,
)

from benchmarks import _common, batch, calls, engine, overhead, scale, vs_outlines
from benchmarks import run as run_module
from outlines_lmstudio import from_lmstudio
from outlines_lmstudio._flow import wait_limit
from outlines_lmstudio.testing._sampler import split_fragments

TINY = replace(QUICK, requests=3, calls=5, import_runs=1)


@pytest.fixture(scope="module")
def emulator() -> Iterator[RemoteEmulator]:
    with RemoteEmulator(slots=4) as emu:
        yield emu


@pytest.fixture(scope="module")
def quick_results(emulator: RemoteEmulator) -> list[CaseResult]:
    names = [name for name in CASES if name not in ("import", "engine")]
    return run_cases(names, TINY, timing=False, log=lambda _: None, emulator=emulator)


def test_every_case_passes_its_correctness_checks(quick_results: list[CaseResult]) -> None:
    names = {r.name for r in quick_results}
    for expected in [
        "overhead.sync",
        "overhead.async",
        "overhead.async.cancel_safe",
        "stream.ttff",
        "parse",
        "batch.sync",
        "batch.async",
        "memory.rss",
        "outlines.json",
        "calls.sync",
        "calls.parse",
        "calls.stream_first",
        "calls.image_reuse",
        "calls.async",
    ]:
        assert expected in names
    assert {f"batch.efficiency.{n}" for n in TINY.efficiency_sizes} <= names
    assert {f"parse_stream.{n}" for n in TINY.stream_fragments} <= names
    assert {f"schema.first.{n}" for n in TINY.schema_fields} <= names
    assert {f"history.{n}" for n in TINY.history_lengths} <= names
    for result in quick_results:
        assert result.checks, result.name
        assert result.failed_checks == [], result.name
        assert result.metrics == [], result.name  # --quick: no timing at all


def test_checks_cover_order_uploads_and_fragments(quick_results: list[CaseResult]) -> None:
    by_name = {r.name: r for r in quick_results}
    assert {"results_equal", "order", "fragments", "concurrent"} <= set(
        by_name["batch.sync"].checks
    )
    for name in ("batch.sync", "batch.async"):  # each side's batch alone
        assert by_name[name].extra["peak_concurrency"] == {"ours": 4, "baseline": 4}
    assert {"schema_sent", "rejects_invalid", "typed"} <= set(by_name["parse"].checks)
    assert "history_sent" in by_name[f"history.{TINY.history_lengths[-1]}"].checks
    image = next(r for r in quick_results if r.name.startswith("image.reuse"))
    assert image.extra["uploads"] == 2 * TINY.image_rounds  # one per side per round
    assert "distinct_replies" in by_name["overhead.sync"].checks
    # every case whose calls send an output type checks what they sent
    typed = ["batch.sync", "batch.async", "batch.vs_loop.32", "memory.rss", "outlines.json"]
    typed += ["calls.sync", "calls.parse", "calls.stream_first", "calls.async"]
    typed += [f"batch.efficiency.{n}" for n in TINY.efficiency_sizes]
    typed += [f"parse_stream.{n}" for n in TINY.stream_fragments]
    for name in typed:
        assert "schema_sent" in by_name[name].checks, name
    for name in ("stream.ttff", "calls.stream_first", *typed[-len(TINY.stream_fragments) :]):
        assert "chunks" in by_name[name].checks, name
    for n in TINY.stream_fragments:
        assert "partials" in by_name[f"parse_stream.{n}"].checks
    assert by_name["memory.rss"].extra["growth_bytes"].keys() == {"ours", "sdk"}


def test_concurrent_check_fails_for_a_sequential_batch(
    emulator: RemoteEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is on our batch alone: in the paired rounds the baseline alone reached the
    4 slots, and a batch of ours run one request at a time passed (found by a probe)."""
    monkeypatch.setattr(
        batch, "from_lmstudio", lambda client, key: from_lmstudio(client, key, max_concurrency=1)
    )
    (result,) = run_cases(["batch"], TINY, timing=False, log=lambda _: None, emulator=emulator)
    assert result.failed_checks == ["concurrent"]
    assert result.extra["peak_concurrency"] == {"ours": 1, "baseline": 4}


def test_sent_alike_compares_the_sides_call_for_call() -> None:
    # interleave(n=2, warmup=1) calls: ours, baseline (warm-up), ours, baseline, baseline, ours
    assert sent_alike(["w", "w", "a", "a", "b", "b"], 2, 1)
    assert not sent_alike(["w", "w", "a", "x", "b", "b"], 2, 1)  # one call differs
    assert not sent_alike(["w", "w", "a", "b", "a", "b"], 2, 1)  # out of step
    assert not sent_alike(["w", "w", "a", "a"], 2, 1)  # a call missing
    assert not sent_alike(["", "", "a", "a", "b", "b"], 2, 1)  # nothing sent


def test_verdict_without_an_interval_is_none() -> None:
    """Below 6 samples a side (``--short``) there is no interval: no pass, no miss."""
    metric = Metric.ratio("wall", [2.0] * 3, [1.0] * 3, Target("<=", 1.05))
    assert (metric.ci, metric.passed, metric.verdict) == (None, None, "no interval")
    result = CaseResult("x", "t", "o", "b", metrics=[metric], checks={"order": True})
    assert result.passed is True  # the checks only: a metric with no interval is no miss
    assert "| no interval |" in format_table([result])


def test_timed_run_reports_wall_and_cpu_with_intervals(emulator: RemoteEmulator) -> None:
    sizes = replace(TINY, requests=8)
    (result,) = run_cases(["overhead"], sizes, log=lambda _: None, emulator=emulator)
    assert [m.name for m in result.metrics] == ["wall", "cpu"]
    for metric in result.metrics:
        assert metric.ci is not None
        assert metric.ci[0] <= metric.value <= metric.ci[1]
        assert metric.target == Target("<=", 1.05)
        assert metric.passed in (True, False)
    assert set(result.extra["extra_per_call"]) == {"wall_us", "cpu_us"}


@pytest.mark.slow
@pytest.mark.real_engine
@pytest.mark.timeout(600)
def test_real_engine_case_compares_the_same_tokens() -> None:
    pytest.importorskip("llama_cpp")
    if engine.gguf_path() is None:
        pytest.skip("the embedded model package is not installed")
    (result,) = run_cases(["engine"], TINY, timing=False, log=lambda _: None)
    assert result.checks == {"same_token_counts": True, "same_text": True}


def test_reply_scripts_have_the_asked_fragments_and_distinct_ids() -> None:
    for i in (0, 35, 36, 511, 1295):
        for fragments in (5, 10, 250):
            text = person_reply(i, fragments)
            assert len(split_fragments(text)) == fragments
            assert person_id(text) == i
            assert person_id(Person.model_validate_json(text)) == i
    for fragments in (7, 8, 30, 2000):
        text = roster_reply(9, fragments)
        assert len(split_fragments(text)) == fragments
        assert person_id(Roster.model_validate_json(text)) == 9
    assert prompt_id(prompt(17)) == 17
    with pytest.raises(ValueError, match="at least 5"):
        person_reply(1, 4)


def test_order_check_catches_a_swapped_batch() -> None:
    replies = [person_reply(i, 6) for i in range(5)]
    assert batch._in_order(replies, 5)
    replies[1], replies[2] = replies[2], replies[1]
    assert not batch._in_order(replies, 5)


def test_remote_emulator_scripts_and_counts(emulator: RemoteEmulator) -> None:
    import lmstudio as lms

    emulator.reset(Script("person", 9))
    with lms.Client(emulator.api_host) as client:
        text = client.llm.model("qwen2.5-7b-instruct").respond(prompt(42)).content
    assert text == person_reply(42, 9)
    stats = emulator.stats()
    assert (stats.predictions, stats.uploads, stats.fragment_counts) == (1, 0, [9])
    emulator.reset(Script("fixed", text="hello"))
    assert emulator.stats().predictions == 0


def test_new_models_are_new_classes() -> None:
    a, b = wide_model(3, 0), wide_model(3, 1)
    assert a is not b
    assert a.model_json_schema()["required"] == ["field_0", "field_1", "field_2"]


def test_interleave_alternates_and_warms_up_on_other_indexes() -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str) -> Side:
        def call(i: int) -> Sample:
            calls.append((name, i))
            return Sample(1.0, 0.5, i)

        return call

    paired = interleave(side("a"), side("b"), 3, warmup=1)
    assert calls == [("a", 3), ("b", 3), ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert paired.results_equal
    assert paired.results("ours") == [0, 1, 2]
    assert not Paired([Sample(1, 1, "x")], [Sample(1, 1, "y")]).results_equal
    assert not Paired().results_equal  # nothing measured is not "equal"


def test_verdicts_use_the_unfavourable_end_of_the_interval() -> None:
    assert Target("<=", 1.05).met(1.01, (0.99, 1.04))
    assert not Target("<=", 1.05).met(1.01, (0.98, 1.06))  # the point passes, the interval not
    assert not Target(">=", 0.95).met(0.97, (0.94, 0.99))
    assert Target(">=", 0.95).met(0.97, None)  # a single measurement: its value
    metric = Metric.ratio("wall", [2.0] * 10, [1.0] * 10, Target("<=", 1.05))
    assert (metric.value, metric.ci, metric.passed) == (2.0, (2.0, 2.0), False)
    assert bootstrap_ci([1.0] * 3, [1.0] * 3) is None
    assert Stats.of([0.003, 0.001, 0.002], 1e3) == Stats(2.0, 1.5, 2.5, 3)


def test_growth_exponent_fits_powers() -> None:
    xs = [250, 500, 1000, 2000]
    assert scale.fit_exponent(xs, [x**2 for x in xs]) == pytest.approx(2.0)
    assert scale.fit_exponent(xs, [3 * x for x in xs]) == pytest.approx(1.0)
    assert math.isnan(scale.fit_exponent([1], [1]))


def test_parse_stream_flatness_is_the_growth_of_its_ratio_to_stream() -> None:
    """A flat extra cost per fragment keeps the ratio flat (exponent 0) and passes; a
    per-fragment re-parse of the accumulated text (an extra cost growing with the length)
    fails, even under a baseline cost that dwarfs it (470 µs a fragment, as measured)."""
    xs = [250, 500, 1000, 2000]
    noise = [0.98, 1.0, 1.02, 0.99, 1.01, 1.0, 0.97, 1.03]
    stream = [[470e-6 * x * n for n in noise] for x in xs]
    flat = [[(470e-6 + 10e-6) * x * n for n in reversed(noise)] for x in xs]
    value, ci = scale._ratio_exponent_ci(xs, flat, stream)
    assert value == pytest.approx(0.0, abs=0.01)
    assert ci is not None
    assert ci[0] <= value <= ci[1] <= scale.FLAT.value
    # a re-parse: 150 µs a fragment more at 2,000 fragments, growing with the length
    reparse = [[(470e-6 + 75e-9 * x) * x * n for n in reversed(noise)] for x in xs]
    value, ci = scale._ratio_exponent_ci(xs, reparse, stream)
    assert ci is not None
    assert value > scale.FLAT.value
    assert not scale.FLAT.met(value, ci)


def _curve_case(name: str, x: int, ours: float, base: float) -> CaseResult:
    return CaseResult(
        name=f"c.{x}",
        title="t",
        ours_label="o",
        baseline_label="b",
        metrics=[Metric.ratio("wall", [ours] * 6, [base] * 6, Target("<=", 1.05))],
        checks={"results_equal": True},
        extra={"curve": name, "x": x, "ours_wall": [ours] * 6, "baseline_wall": [base] * 6},
    )


def test_report_curves_and_docs_keep_other_sections(tmp_path: Path) -> None:
    results = [_curve_case("history", x, x * 1e-3, x * 1e-3 / 2) for x in (10, 100, 1000)]
    results[0].checks["order"] = False
    payload = json.loads(json.dumps(report(results, TINY, mode="t", elapsed=1.0, command="c")))
    assert {"nproc", "cpu_model", "python", "packages"} <= set(payload["machine"])
    assert payload["cases"][0]["pass"] is False
    curve = payload["curves"]["history"]
    assert curve["ours_exponent"] == pytest.approx(1.0)
    assert [p["x"] for p in curve["points"]] == [10, 100, 1000]
    assert "growth exponent" in format_curves(curves(results))
    table = format_table(results)
    assert "**FAILED**: order" in table
    assert table.count("\n") == 1 + len(results)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(
        f"# B\n\n## Latest results\n\n{START}\nold\n{END}\n\n{CURVES_START}\nold curves\n"
        f"{CURVES_END}\n\n## On the real engine\n\nkept\n"
    )
    update_docs(docs, payload)
    text = docs.read_text()
    commit = payload["machine"].get("commit") or "unknown"
    assert f"## Latest results: commit {commit}, {payload['created'][:10]}\n" in text
    assert "not a power law" in text  # the history curve's exponent, said next to it
    assert "old" not in text
    assert text.endswith("## On the real engine\n\nkept\n")
    assert payload["table"] in text
    assert "growth exponent" in text


def test_quick_table_lists_checks() -> None:
    result = CaseResult("x", "t", "o", "b", checks={"order": False, "results_equal": True})
    assert "order **FAILED**, results_equal ok" in format_table([result])


def test_cli_refuses_unknown_cases_and_bad_calls(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--calls", "0"])
    assert "--calls" in capsys.readouterr().err
    # Found by a probe: os.access says /proc is writable; the run's results were then lost.
    for output in ("/proc/results.json", "/proc/a/folder/results.json"):
        with pytest.raises(SystemExit):
            main(["--quick", "--output", output])
        assert f"--output {output}: cannot be written in /proc" in capsys.readouterr().err


def test_the_output_check_leaves_the_users_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: the check wrote and deleted ``<stem>.tmp.json``, a user's file."""
    (tmp_path / "run.tmp.json").write_text("mine")
    monkeypatch.setattr(run_module, "run_cases", lambda *args, **kwargs: [])
    assert main(["--quick", "--only", "parse", "--output", str(tmp_path / "run.json")]) == 0
    assert (tmp_path / "run.tmp.json").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.tmp.json"]
    # With the umask's mode, or the replaced file's (a review: a temporary file's 0600).
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "run.json").chmod(0o640)
    assert main(["--quick", "--only", "parse", "--output", str(tmp_path / "run.json")]) == 0
    assert stat.S_IMODE((tmp_path / "run.json").stat().st_mode) == 0o640


def test_a_group_named_twice_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: ``--only parse parse`` ran the group twice (twice the time)."""
    ran: list[list[str]] = []

    def run_cases(names: list[str], *args: Any, **kwargs: Any) -> list[CaseResult]:
        ran.append(names)
        return []

    monkeypatch.setattr(run_module, "run_cases", run_cases)
    output = tmp_path / "run.json"
    assert main(["--quick", "--only", "parse", "calls", "parse", "--output", str(output)]) == 0
    assert ran == [["parse", "calls"]]
    assert json.loads(output.read_text())["groups"] == ["parse", "calls"]


def test_calls_are_counted_per_call_with_the_package_s_own() -> None:
    def leaf() -> float | None:
        return wait_limit(None, None, 0.0)[0]  # one of the package's functions

    def work(i: int) -> tuple[int, float | None]:
        return i, leaf()

    per_call, own, results = count_calls(profiled(work), 4, start=10)
    assert per_call == 3  # work, leaf and wait_limit
    assert own == 1
    assert results == [(i, None) for i in range(10, 14)]


def test_awaited_calls_are_counted_per_call() -> None:
    async def leaf() -> float | None:
        return wait_limit(None, None, 0.0)[0]

    async def work(i: int) -> tuple[int, float | None]:
        return i, await leaf()

    per_call, own, results = asyncio.run(acount_calls(work, 3))
    assert per_call == 3  # work, leaf and wait_limit
    assert own == 1
    assert results == [(i, None) for i in range(3)]


@pytest.mark.parametrize(
    ("saved", "problem"),
    [
        ({"mode": "quick", "table": "", "groups": list(run_module.CASES)}, "a quick run"),
        ({"mode": "full", "table": "", "groups": ["overhead"]}, "some case groups only"),
        ({"mode": "full", "table": "", "command": "python -m benchmarks --onl calls"}, "groups"),
        ({"cases": []}, "not a run saved by python -m benchmarks"),
        # Found by a review: a run whose group raised lacks its cases.
        (
            {
                "mode": "full",
                "table": "",
                "groups": list(run_module.CASES),
                "cases": [{"name": "parse", "extra": {"error": "KeyError: 'x'"}}],
            },
            "a run whose case groups raised: parse (KeyError: 'x')",
        ),
        # Found by a probe: a KeyError traceback for a saved run without its machine.
        (
            {"mode": "full", "table": "", "groups": list(run_module.CASES), "cases": []},
            "not a run saved by python -m benchmarks (cannot read its KeyError: 'machine')",
        ),
    ],
)
def test_docs_are_published_from_full_runs_of_every_case_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], saved: dict[str, Any], problem: str
) -> None:
    """--update-docs with --quick or --only replaced the published full table with a partial
    one, and --docs-from took a partial run (found by a probe and a review)."""
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as info:
        run_module.main(["--docs-from", str(path)])
    assert info.value.code == 2
    assert problem in capsys.readouterr().err
    for partial in (["--quick"], ["--short"], ["--only", "import"]):
        with pytest.raises(SystemExit):
            run_module.main([*partial, "--update-docs"])
    with pytest.raises(SystemExit):
        run_module.main(["--quick", "--output", str(tmp_path)])  # a folder: refused at once


# -- the checks fail on broken cases -----------------------------------------------------------
# A probe broke the library in a clone (a batch that dropped its output type, a parse_stream
# that yielded only its result, a stream that gave the whole reply in one piece) and --quick
# still passed: the emulator's reply is scripted, so it does not depend on what was sent.
# Here the same breakages, as wrappers around a real model, each caught by its check.


class _Wrapped:
    """A real model, every method passed through but those a subclass breaks."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, model_input: Any, output_type: Any = None, **kwargs: Any) -> Any:
        return self.model(model_input, output_type, **kwargs)


class _Untyped(_Wrapped):
    """Drops the output type of calls, streams and batches: no JSON schema is sent."""

    def __call__(self, model_input: Any, output_type: Any = None, **kwargs: Any) -> Any:
        return self.model(model_input, **kwargs)

    def stream(self, model_input: Any, output_type: Any = None, **kwargs: Any) -> Any:
        return self.model.stream(model_input, **kwargs)

    def batch(self, model_input: Any, output_type: Any = None, **kwargs: Any) -> Any:
        return self.model.batch(model_input, **kwargs)


class _Buffered(_Wrapped):
    """A stream that gives the whole reply at its end, in one piece."""

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        yield "".join(self.model.stream(*args, **kwargs))


class _FinalOnly(_Wrapped):
    """A parse_stream that yields its validated result only, no partial values."""

    def parse_stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        yield list(self.model.parse_stream(*args, **kwargs))[-1]


def _break(
    monkeypatch: pytest.MonkeyPatch, wrap: Callable[[Any], Any], *modules: ModuleType
) -> None:
    """Make the cases of ``modules`` get their models through ``wrap``."""

    def from_lmstudio_wrapped(client: Any, key: str, **options: Any) -> Any:
        return wrap(from_lmstudio(client, key, **options))

    @contextmanager
    def sync_sides(api_host: str, key: str = _common.TEXT_MODEL) -> Iterator[tuple[Any, Any]]:
        with _common.sync_sides(api_host, key) as (model, handle):
            yield wrap(model), handle

    for module in modules:
        monkeypatch.setattr(module, "from_lmstudio", from_lmstudio_wrapped)
        if hasattr(module, "sync_sides"):
            monkeypatch.setattr(module, "sync_sides", sync_sides)


def test_schema_check_fails_for_calls_that_drop_their_output_type(
    emulator: RemoteEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches, loops and single calls that sent no JSON schema passed every check."""
    _break(monkeypatch, _Untyped, batch, calls, vs_outlines, scale)
    sizes = replace(TINY, token_latency=0.005)  # the concurrency is not what is checked here
    groups = ["batch", "batch-async", "efficiency", "batch-loop", "calls", "outlines"]
    groups.append("parse-stream")  # its baseline, model.stream, drops the type
    results = run_cases(groups, sizes, timing=False, log=lambda _: None, emulator=emulator)
    by_name = {r.name: r for r in results}
    untyped = ["batch.sync", "batch.async", "batch.vs_loop.32", "outlines.json"]
    untyped += ["calls.sync", "calls.stream_first", "calls.async"]
    untyped += [f"batch.efficiency.{n}" for n in sizes.efficiency_sizes]
    untyped += [f"parse_stream.{n}" for n in sizes.stream_fragments]
    for name in untyped:
        assert "schema_sent" in by_name[name].failed_checks, name
    # the scripted replies are the same text: only what was sent tells
    for name in ("batch.sync", "batch.async", "calls.sync", "outlines.json"):
        assert by_name[name].checks["results_equal"], name
    assert by_name["calls.parse"].checks["schema_sent"]  # parse was left as it is


class _Unvalidated(_Wrapped):
    """A parse_stream whose values are not validated: its result is no Roster."""

    def parse_stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        yield {"not": "a roster"}


def test_a_case_that_raises_fails_alone_and_the_run_goes_on(
    emulator: RemoteEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: a check that could not read what a broken library returned ended
    the whole run with a traceback: no table, no saved file, the later groups never run."""
    _break(monkeypatch, _Unvalidated, scale)
    logged: list[str] = []
    results = run_cases(
        ["parse-stream", "parse"], TINY, timing=False, log=logged.append, emulator=emulator
    )
    assert [r.failed_checks for r in results if r.name == "parse-stream"] == [["completed"]]
    assert any(line.startswith("  parse-stream FAILED: ") for line in logged), logged
    assert {r.name for r in results} >= {"parse-stream", "parse"}  # the next group ran
    assert all(not r.failed_checks for r in results if r.name != "parse-stream")


def test_a_run_with_a_group_that_raised_is_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by a review: --update-docs rewrote the docs without the group's cases."""
    failed = CaseResult("parse", "parse (raised)", "-", "-", checks={"completed": False})
    failed.extra["error"] = "KeyError: 'x'"
    monkeypatch.setattr(run_module, "run_cases", lambda *args, **kwargs: [failed])
    monkeypatch.setattr(engine, "unavailable", lambda: "")
    published: list[Any] = []
    monkeypatch.setattr(run_module, "update_docs", lambda *args: published.append(args))
    assert main(["--update-docs", "--output", str(tmp_path / "run.json")]) == 1
    assert published == []
    out = capsys.readouterr().out
    assert "benchmarks.md not updated: the docs publish full runs of every case" in out
    assert "Failed correctness checks: parse (completed)" in out


def test_partials_check_fails_for_a_parse_stream_of_its_result_only(
    emulator: RemoteEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _break(monkeypatch, _FinalOnly, scale)
    results = run_cases(["parse-stream"], TINY, timing=False, log=lambda _: None, emulator=emulator)
    assert [r.failed_checks for r in results] == [["partials"]] * len(TINY.stream_fragments)


def test_chunks_check_fails_for_a_stream_in_one_piece(
    emulator: RemoteEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream buffered to its end passed stream.ttff: its first piece was the whole reply."""
    _break(monkeypatch, _Buffered, overhead, calls, scale)
    results = run_cases(
        ["stream", "calls", "parse-stream"],
        TINY,
        timing=False,
        log=lambda _: None,
        emulator=emulator,
    )
    failed = {r.name: r.failed_checks for r in results if r.failed_checks}
    expected = {"stream.ttff": ["chunks"], "calls.stream_first": ["chunks"]}
    expected |= {f"parse_stream.{n}": ["chunks"] for n in TINY.stream_fragments}
    assert failed == expected


def test_partial_values_must_grow_into_the_result() -> None:
    final = Roster.model_validate({"people": [{"name": "P01 ab", "age": 1}]})
    grown = [{}, {"people": [{}]}, {"people": [{"name": "P01"}]}, {"people": [{"name": "P01 ab"}]}]
    assert scale.partials_grow([*grown, final], Roster)
    assert scale.partials_grow([grown[0], final.model_dump(), final], Roster)  # the whole data
    assert not scale.partials_grow([final], Roster)  # its result only
    assert not scale.partials_grow([final.model_dump(), final], Roster)  # one piece
    assert not scale.partials_grow([*grown, final.model_dump()], Roster)  # no typed result
    assert not scale.partials_grow([*grown, grown[-1], final], Roster)  # a value repeated
    assert not scale.partials_grow([grown[2], grown[1], final], Roster)  # shrinking
    wrong = [{}, {"people": [{"name": "P02"}]}, final]  # not a prefix of the result's name
    assert not scale.partials_grow(wrong, Roster)
    assert not scale.partials_grow([{}, {"people": [{"age": 2}]}, final], Roster)
    many = [{"people": [{"name": "P01" + " ab" * k}]} for k in range(200)]
    last = Roster.model_validate(many[-1] | {"people": [many[-1]["people"][0] | {"age": 1}]})
    assert scale.partials_grow([*many, last], Roster)
    jumbled = [*many[:100], many[150], *many[101:], last]  # one value out of step
    assert not scale.partials_grow(jumbled, Roster)
    # a timed run checks a sample of them: the first, the last and evenly between
    assert scale.partials_grow(jumbled, Roster, sample=16)  # 100 is not among them
    assert not scale.partials_grow([*many[:98], many[150], *many[99:], last], Roster, sample=16)
    assert not scale.partials_grow([many[0], many[0], last], Roster, sample=16)


def test_sent_schema_wants_one_setting_for_every_call() -> None:
    def stats(structured: list[str], properties: list[int]) -> ServerStats:
        return ServerStats(0, 0, [], 0, [], [], properties, [], structured, [])

    assert sent_schema(stats(["s", "s", "s"], [2, 2, 2]), 3, 2)
    assert not sent_schema(stats(["s", "", "s"], [2, -1, 2]), 3, 2)  # one sent none
    assert not sent_schema(stats(["s", "t", "s"], [2, 2, 2]), 3, 2)  # another schema
    assert not sent_schema(stats(["s", "s"], [2, 2]), 3, 2)  # a call missing
    assert not sent_schema(stats(["", ""], [-1, -1]), 2, 2)  # nothing sent
    assert not sent_schema(stats(["s", "s"], [3, 3]), 2, 2)  # a schema of 3 properties


def test_a_skipped_engine_case_is_said_and_refused_for_the_docs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without llama-cpp-python or the model package the case was skipped silently: its row
    read "-" and --update-docs would have published a full run without it."""
    reason = "llama-cpp-python is not installed: pip install x"
    monkeypatch.setattr(engine, "unavailable", lambda: reason)
    (result,) = run_cases(["engine"], TINY, timing=False, log=lambda _: None, emulator=None)
    assert result.skipped == reason
    assert f"**SKIPPED**: {reason}" in format_table([result])
    ran = CaseResult("x", "t", "o", "b", metrics=[Metric("wall", 1.0)], checks={"ok": True})
    assert f"**SKIPPED**: {reason} |" in format_table([ran, result])  # the timed table too
    output = str(tmp_path / "q.json")
    assert main(["--quick", "--only", "engine", "--output", output]) == 0  # said, not failed
    assert f"Skipped: engine.tokens_per_s ({reason})" in capsys.readouterr().out
    assert main(["--quick", "--strict", "--only", "engine", "--output", output]) == 1
    with pytest.raises(SystemExit) as info:  # refused before the run, not after it
        main(["--update-docs", "--output", output])
    assert info.value.code == 2
    assert f"the engine case cannot run here: {reason}" in capsys.readouterr().err
    saved = json.loads(Path(output).read_text())
    saved.update(mode="full", groups=list(CASES))
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    with pytest.raises(SystemExit) as info:
        main(["--docs-from", str(path)])
    assert info.value.code == 2
    assert "a run that skipped engine.tokens_per_s" in capsys.readouterr().err
