"""The benchmark itself: every case runs with tiny sizes and compares like with like.

No timing is asserted: only that both sides of each case got the same results,
that uploads are counted, and that the report has what the docs promise.
"""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from benchmarks._harness import (
    CaseResult,
    Context,
    Paired,
    Side,
    Sizes,
    Stats,
    Target,
    interleave,
)
from benchmarks.run import CASES, END, START, format_table, main, report, run_cases, update_docs

from benchmarks import batch, images, imports, overhead, streaming, vs_outlines
from outlines_lmstudio.testing import LMStudioEmulator

TINY = Sizes(
    requests=4,
    async_requests=4,
    outlines_requests=3,
    warmup=1,
    batch_prompts=6,
    batch_rounds=1,
    batch_fragments=7,
    token_latency=0.001,
    image_prompts=3,
    image_rounds=2,
    image_size=(32, 24),
    import_runs=1,
)


@pytest.fixture
def ctx(lmstudio_emulator: LMStudioEmulator) -> Context:
    return Context(emulator=lmstudio_emulator, sizes=TINY)


def by_name(results: list[CaseResult]) -> dict[str, CaseResult]:
    return {r.name: r for r in results}


@pytest.mark.parametrize(
    "case",
    [overhead.run, overhead.run_async, vs_outlines.run, streaming.run],
    ids=["overhead", "overhead-async", "outlines", "stream"],
)
def test_per_request_cases_send_the_same_requests(
    ctx: Context, case: Callable[[Context], list[CaseResult]]
) -> None:
    results = case(ctx)
    assert results
    for result in results:
        assert result.extra["results_equal"], result.name
        assert result.n == (TINY.outlines_requests if "outlines" in result.name else 4)
    # warm-up and measured requests, both sides, all reached the emulator
    warm = 2 * TINY.warmup
    sent = sum(2 * r.n + warm for r in results)
    assert len(ctx.emulator.predictions) == sent


def test_batch_cases_are_concurrent_and_fixed_length(ctx: Context) -> None:
    for result in [*batch.run(ctx), *batch.run_async(ctx)]:
        assert result.extra["results_equal"]
        assert result.extra["fragments_seen"] == [TINY.batch_fragments]
        assert result.extra["peak_concurrency"] >= 2
        assert result.ratio_kind == "baseline/ours"
    assert ctx.emulator.token_latency == 0.0  # restored


def test_reply_has_the_asked_number_of_fragments() -> None:
    assert json.loads(batch.reply(9)) == {"name": "A bcd bcd bcd bcd", "age": 36}
    with pytest.raises(ValueError, match="at least 5"):
        batch.reply(4)


def test_images_are_uploaded_once_by_ours_and_every_time_by_outlines(ctx: Context) -> None:
    results = by_name(images.run(ctx))
    uploads = results["images.uploads"].extra["uploads_per_round"]
    assert uploads == {
        "ours": [1.0] * TINY.image_rounds,
        "outlines": [float(TINY.image_prompts)] * TINY.image_rounds,
    }
    assert results["images.uploads"].passed is True
    assert results["images.time"].extra["results_equal"]
    assert results["images.time"].n == TINY.image_rounds


def test_import_case_runs_fresh_interpreters(ctx: Context) -> None:
    (result,) = imports.run(ctx)
    assert result.n == TINY.import_runs
    assert result.ours.median > 0
    assert set(result.extra["import_statement_ms"]) == {"ours", "baseline"}


def test_report_has_medians_ratio_target_pass_and_n(
    lmstudio_emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    results = run_cases(["overhead", "batch"], TINY, log=lambda _: None, emulator=lmstudio_emulator)
    payload = json.loads(
        json.dumps(report(results, TINY, mode="tiny", elapsed=0.0, command="test"))
    )
    assert {"nproc", "cpu_model", "python", "packages"} <= set(payload["machine"])
    for case in payload["cases"]:
        assert {"medians", "ratio", "target", "pass", "n"} <= set(case)
        assert set(case["medians"]) == {"ours", "baseline"}
        assert case["pass"] in (True, False)
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n{START}\nold\n{END}\n\nafter\n")
    update_docs(docs, payload)
    text = docs.read_text()
    assert "old" not in text
    assert text.endswith(f"{END}\n\nafter\n")
    assert payload["table"] in text
    assert "CPU time of the calling thread" in text
    table = format_table(results)
    assert table.count("\n") == 1 + len(results)
    assert "overhead.sync" in table
    assert "batch.sync" in table


def test_cli_refuses_unknown_cases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err
    assert next(iter(CASES)) == "overhead"


def test_interleave_alternates_and_skips_warmup() -> None:
    calls: list[tuple[str, int]] = []

    def side(name: str) -> Side:
        def call(i: int) -> tuple[float, object]:
            calls.append((name, i))
            return 1.0, i

        return call

    paired = interleave(side("a"), side("b"), 3, warmup=1)
    assert calls == [
        ("a", -1),
        ("b", -1),
        ("a", 0),
        ("b", 0),
        ("b", 1),
        ("a", 1),
        ("a", 2),
        ("b", 2),
    ]
    assert paired.results_equal
    assert paired.ours_results == [0, 1, 2]


def test_stats_targets_and_intervals() -> None:
    assert Stats.of([0.003, 0.001, 0.002], 1e3) == Stats(2.0, 1.5, 2.5, 3)
    assert Target("<=", 1.05).met(1.05, 0)
    assert not Target(">=", 3.5).met(3.4, 0)
    assert Target("==", 1, on="ours").met(0.05, 1.0)
    assert str(Target(">=", 3.5)) == "ratio >= 3.5"
    paired = Paired(ours=[1.0] * 30, baseline=[2.0] * 30)
    assert paired.ratio_ci("ours/baseline") == (0.5, 0.5)
    assert Paired(ours=[1.0], baseline=[1.0]).ratio_ci("ours/baseline") is None
