"""``extract``: the JSONL pipeline, its input checks, failures and resuming."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import lmstudio as lms
import pytest

from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import (
    PERSON_SCHEMA,
    TEXT,
    UNLOADED,
    VISION,
    StallPastTheSdkLimit,
    assert_one_line_error,
    broken_png,
    cli_env,
    hang_up,
    lines,
    png,
    run_on_a_terminal,
    script_path,
    spawn_on_a_terminal,
)

pytestmark = pytest.mark.timeout(40)


def write_items(path: Path, count: int, **extra: object) -> Path:
    with path.open("w") as handle:
        for i in range(count):
            handle.write(
                json.dumps({"id": f"item-{i}", "prompt": f"Person number {i}", **extra}) + "\n"
            )
    return path


def extract(schema: Path, source: Path, target: Path, *more: str) -> list[str]:
    return [
        "extract",
        "--schema",
        str(schema),
        "--input",
        str(source),
        "--output",
        str(target),
        *more,
    ]


def assert_complete_output(target: Path, ids: set[str | int]) -> None:
    records = lines(target)
    assert Counter(r["id"] for r in records) == Counter(ids)  # every id exactly once
    for record in records:
        jsonschema.validate(record["result"], PERSON_SCHEMA)


def test_extract_writes_one_valid_line_per_item(
    main_in_process: MainInProcess,
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emulator, "token_latency", 0.005)  # long enough for items to overlap
    source = write_items(tmp_path / "in.jsonl", 12)
    with source.open("a") as handle:
        handle.write("\n")  # blank lines are skipped
        handle.write(
            json.dumps({"id": 7, "prompt": "An integer id", "note": "extra keys ignored"}) + "\n"
        )
    target = tmp_path / "out.jsonl"
    result = run_cli(*extract(schema_file, source, target, "--concurrency", "3"))
    assert result.returncode == 0, result.stderr
    assert_complete_output(target, {f"item-{i}" for i in range(12)} | {7})
    assert "13/13" in result.stderr
    assert "items/s" in result.stderr
    assert "ETA" in result.stderr
    assert "13 results and 0 errors" in result.stderr
    assert 1 < emulator.peak_concurrency() <= 3
    again = main_in_process(*extract(schema_file, source, target))
    assert again.returncode == 0
    assert "Nothing to do: all 13 ids are already in" in again.stderr
    assert len(lines(target)) == 13


def test_failed_items_are_error_lines_and_can_be_retried(
    main_in_process: MainInProcess,
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
) -> None:
    source = write_items(tmp_path / "in.jsonl", 3)
    target = tmp_path / "out.jsonl"
    emulator.script(TEXT, ['{"name": "No age"}'])  # the first reply does not validate
    first = run_cli(
        *extract(schema_file, source, target, "-m", TEXT, "--retries", "0", "--concurrency", "1")
    )
    assert first.returncode == 1
    records = lines(target)
    errors = [r for r in records if "error" in r]
    assert len(records) == 3
    assert len(errors) == 1
    assert errors[0]["error"]["type"] == "ParseError"
    assert errors[0]["error"]["raw"] == '{"name": "No age"}'
    assert "result" not in errors[0]
    # Errors count as answered, until --retry-errors redoes them.
    again = main_in_process(*extract(schema_file, source, target))
    assert "Nothing to do: all 3 ids are already in" in again.stderr
    assert "1 of them as errors (--retry-errors redoes those)." in again.stderr  # not hidden
    assert again.returncode == 1  # was 0: `extract ... && next-step` went on with a failed item
    write_items(source, 4)  # a new item: it succeeds, the error stays
    resumed = main_in_process(*extract(schema_file, source, target, "-m", TEXT))
    assert resumed.returncode == 1, resumed.stderr
    assert "1 result and 0 errors appended" in resumed.stderr  # not "1 results" (a probe)
    assert "1 of the input's 4 ids failed: their lines in" in resumed.stderr
    assert "(1 from an earlier run: --retry-errors redoes them)." in resumed.stderr
    retried = main_in_process(*extract(schema_file, source, target, "-m", TEXT, "--retry-errors"))
    assert retried.returncode == 0, retried.stderr
    assert_complete_output(target, {"item-0", "item-1", "item-2", "item-3"})


def test_an_item_is_re_asked_once_by_default(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by mutation testing: nothing checked that `extract` without --retries re-asks
    once (docs/cli.md: "--retries N ... (default 1)"); with a default of 0 the item failed."""
    source = write_items(tmp_path / "in.jsonl", 1)
    target = tmp_path / "out.jsonl"
    emulator.script(TEXT, ['{"name": "No age"}', '{"name": "Ann", "age": 5}'])
    result = main_in_process(*extract(schema_file, source, target, "-m", TEXT))
    assert result.returncode == 0, result.stderr
    assert lines(target) == [{"id": "item-0", "result": {"name": "Ann", "age": 5}}]
    assert len(emulator.predictions) == 2  # the reply that did not validate, then the re-ask


def test_retry_errors_keeps_the_error_lines_when_the_run_cannot_start(
    main_in_process: MainInProcess,
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
) -> None:
    """Found by a probe: --retry-errors removed the error lines before connecting, so a run
    that then failed (LM Studio unreachable, a mistyped model) lost their raw replies and
    messages with nothing redone."""
    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    emulator.script(TEXT, ['{"name": "No age"}'] * 2)
    first = run_cli(*extract(schema_file, source, target, "-m", TEXT, "--retries", "0"))
    assert first.returncode == 1
    before = target.read_bytes()
    assert before.count(b'"error"') == 2
    wrong_model = run_cli(
        *extract(schema_file, source, target, "-m", "no-such-model", "--retry-errors")
    )
    assert wrong_model.returncode != 0
    unreachable = run_cli(
        "--host", "127.0.0.1:9", *extract(schema_file, source, target, "--retry-errors"), host=False
    )
    assert unreachable.returncode == 3
    assert target.read_bytes() == before
    retried = main_in_process(*extract(schema_file, source, target, "-m", TEXT, "--retry-errors"))
    assert retried.returncode == 0, retried.stderr
    assert "Retrying 2 ids whose output line was an error." in retried.stderr
    assert_complete_output(target, {"item-0", "item-1"})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "object", "not": {"required": ["a"]}},
    ],
)
def test_a_schema_no_request_can_use_is_a_usage_error_before_any_item(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path, schema: dict[str, object]
) -> None:
    """Found by a probe: each item failed on it and was written as an error line (status 1,
    and a rerun needed --retry-errors), where generate refuses it as a usage error."""
    schema_path = tmp_path / "bad.schema.json"
    schema_path.write_text(json.dumps(schema))
    source = write_items(tmp_path / "in.jsonl", 3)
    target = tmp_path / "out.jsonl"
    result = run_cli(*extract(schema_path, source, target))
    assert result.returncode == 2
    assert_one_line_error(result)
    # The hints in the command's terms: extract has no --regex (found by a probe: it said
    # "from_lmstudio(..., grammar=True)" and "model.parse(..., retries=N)").
    assert "grammar=True" not in result.stderr
    assert "model.parse" not in result.stderr
    assert "--regex" not in result.stderr
    assert not target.exists()
    assert emulator.requests == []


def test_images_are_sent_relative_to_the_input_file(
    main_in_process: MainInProcess,
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "pics").mkdir()
    png(tmp_path / "pics" / "a.png", (16, 16))
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"id": "with-image", "prompt": "Who?", "images": ["pics/a.png"]})
        + "\n"
        + json.dumps({"id": "missing-image", "prompt": "Who?", "images": ["pics/nope.png"]})
        + "\n"
    )
    target = tmp_path / "out.jsonl"
    result = run_cli(*extract(schema_file, source, target, "-m", VISION))
    assert result.returncode == 1  # one item failed
    by_id = {r["id"]: r for r in lines(target)}
    jsonschema.validate(by_id["with-image"]["result"], PERSON_SCHEMA)
    assert "nope.png" in by_id["missing-image"]["error"]["message"]
    assert [len(p.images) for p in emulator.predictions] == [1]

    refused = main_in_process(*extract(schema_file, source, tmp_path / "other.jsonl", "-m", TEXT))
    assert refused.returncode == 2
    assert_one_line_error(refused, "have images", "no vision support")
    assert not (tmp_path / "other.jsonl").exists()

    # A text-only model that is not loaded is refused without loading it (found by a probe).
    refused = main_in_process(
        *extract(schema_file, source, tmp_path / "third.jsonl", "-m", UNLOADED)
    )
    assert refused.returncode == 2
    assert_one_line_error(refused, "have images", UNLOADED, "no vision support")
    loads = [r.parameter for r in emulator.requests if r.endpoint == "getOrLoad"]
    assert UNLOADED not in [load["identifier"] for load in loads]


def test_a_corrupt_image_fails_its_item_and_the_run_goes_on(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by a probe: Pillow's SyntaxError for a broken PNG ended the whole run, as a bug."""
    broken_png(tmp_path / "broken.png")
    source = tmp_path / "in.jsonl"
    items = [{"id": 1, "prompt": "a", "images": ["broken.png"]}, {"id": 2, "prompt": "b"}]
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    target = tmp_path / "out.jsonl"
    result = run_cli(*extract(schema_file, source, target, "-m", VISION, "--concurrency", "1"))
    assert result.returncode == 1  # one item failed
    by_id = {r["id"]: r for r in lines(target)}
    assert by_id[1]["error"]["type"] == "InputError"
    assert "corrupt or truncated" in by_id[1]["error"]["message"]
    jsonschema.validate(by_id[2]["result"], PERSON_SCHEMA)
    assert "bug" not in result.stderr


def test_an_image_path_that_is_not_a_file_fails_its_item_without_waiting(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by probes: a named pipe's open() (it waits for a writer) first held the
    decoding lock, so no item with an image finished; then the pipe's item alone waited for
    good, and again on every resumed run, so an unattended run never ended. A path that is
    not a file is now its item's error, at once."""
    os.mkfifo(tmp_path / "fifo.png")
    png(tmp_path / "ok.png", (16, 16))
    items = [{"id": 0, "prompt": "a", "images": ["fifo.png"]}]
    items += [{"id": 1, "prompt": "b", "images": ["/dev/null"]}]
    items += [{"id": i, "prompt": "c", "images": ["ok.png"]} for i in range(2, 5)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    target = tmp_path / "out.jsonl"
    command = extract(schema_file, source, target, "-m", VISION, "--concurrency", "4")
    result = run_cli(*command, timeout=30)
    assert result.returncode == 1, result.stderr
    by_id = {r["id"]: r for r in lines(target)}
    assert sorted(by_id) == [0, 1, 2, 3, 4]
    assert "fifo.png': it is a named pipe, not a file" in by_id[0]["error"]["message"]
    assert "'/dev/null': it is a character device, not a file" in by_id[1]["error"]["message"]
    assert all("result" in by_id[i] for i in range(2, 5))


def test_resuming_many_errors_takes_linear_time(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by a probe: resuming an output of 40,000 error lines took 35 s before saying
    "Nothing to do" (the kept errors were rebuilt as a set once per item)."""
    count = 40_000
    source = write_items(tmp_path / "in.jsonl", count)
    error = {"type": "ParseError", "message": "no"}
    target = tmp_path / "out.jsonl"
    target.write_text(
        "".join(json.dumps({"id": f"item-{i}", "error": error}) + "\n" for i in range(count))
    )
    result = run_cli(*extract(schema_file, source, target), timeout=20)
    assert result.returncode == 1
    assert f"{count} of them as errors" in result.stdout + result.stderr


def test_items_piped_in_and_results_piped_out(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    # `--input -` was "Cannot read input '-': no such file."
    png(tmp_path / "a.png", (16, 16))  # relative to the current directory
    items = [
        {"id": "one", "prompt": "Ann, 3"},
        {"id": 2, "prompt": "Bob, 4", "images": ["a.png"]},
    ]
    piped = "".join(json.dumps(item) + "\n" for item in items)
    result = run_cli(
        "extract", "--schema", str(schema_file), "--input", "-", "--output", "-", "-m", VISION,
        stdin=piped,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(str(r["id"]) for r in records) == ["2", "one"]
    for record in records:
        jsonschema.validate(record["result"], PERSON_SCHEMA)
    assert sorted(len(p.images) for p in emulator.predictions) == [0, 1]
    assert "2 results and 0 errors written to standard output." in result.stderr  # not "to -"


def test_a_malformed_line_piped_in_is_named(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD + '\n{"id": "b"}\n'))
    result = main_in_process(*extract(schema_file, Path("-"), tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, 'standard input (--input -), line 2 needs a non-empty "prompt"')
    assert not (tmp_path / "out.jsonl").exists()
    assert emulator.predictions == []


def test_keys_of_a_line_s_own_are_still_ignored(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Only a near miss of a key the line lacks is refused: data of its own is not."""
    lines = [
        {"id": "a", "prompt": "fine", "images": [], "image": "ignored", "source": "x"},
        # Found by a review: refused by a looser match as "did you mean images?".
        {"id": "b", "prompt": "fine", "image": None, "n_images": 0, "imagesize": [1, 2]},
        {"id": "c", "prompt": "fine", "prompt_id": 7, "nimages": 0},
        # Found by mutation testing: an empty list, or a flag named like the id, is data too.
        {"id": "d", "prompt": "fine", "image": [], "ID": True},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert len(emulator.predictions) == 4


def test_malformed_line_is_refused_before_any_work(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "prompt": "fine"}) + '\n{"id": "b", "prompt": \n')
    target = tmp_path / "out.jsonl"
    result = run_cli(*extract(schema_file, source, target))
    assert result.returncode == 2
    assert_one_line_error(result, "in.jsonl, line 2 is not valid JSON", "fix or remove that line")
    assert not target.exists()
    assert emulator.predictions == []


GOOD = json.dumps({"id": "a", "prompt": "fine"})


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"prompt": "x"}\n', 'in.jsonl, line 1 needs an "id"'),
        # Found by a probe: each was said to be no id at all ('needs an "id"').
        ('{"id": true, "prompt": "x"}\n', 'has the "id" true, which is neither a string nor'),
        ('{"id": 1.0, "prompt": "x"}\n', 'line 1 has the "id" 1.0, which is neither'),
        ('{"id": null, "prompt": "x"}\n', 'has the "id" null, which is neither a string nor'),
        ('{"id": "x", "prompt": ""}\n', 'needs a non-empty "prompt"'),
        # found by mutation testing: a prompt of only white space was sent to the model
        ('{"id": "x", "prompt": " \\t\\n "}\n', 'line 1 needs a non-empty "prompt" string'),
        ('{"id": "x", "prompt": "p", "images": [1]}\n', '"images" must be a list of file paths'),
        ('{"id": "x", "prompt": "p", "images": [""]}\n', '"images" must be a list of file'),
        (GOOD + "\n\n" + GOOD + "\n", "line 3 repeats the id 'a' of line 1"),
        ("[1]\n", "is a JSON list, not an object"),
        # kept the last id without a word (session 26)
        ('{"id": "s", "prompt": "x", "id": "s2"}\n', "line 1 has the key 'id' twice"),
        ('{"id": ' + "9" * 5000 + ', "prompt": "p"}\n', "line 1 has an integer of more than"),
        (GOOD[:-1] + ', "x": "\u2028\u0085"}\n{"id": 2}\n', "in.jsonl, line 2 needs a non-empty"),
        ('{"id": "\\ud800", "prompt": "hi"}\n', 'line 1: "id" has a lone surrogate'),
        ('{"id": 1, "prompt": "hi \\udfff"}\n', '"prompt" has a lone surrogate'),
        ('{"id": 1, "prompt": "p", "images": ["\\ud800.png"]}\n', '"images" has a lone'),
        # "unexpected RuntimeError/ValueError ... a bug" (found by a probe)
        ('{"id": 1, "prompt": "p", "images": ["~nouser_zz9/a.png"]}\n', 'line 1: an "images" path'),
        ('{"id": 1, "prompt": "p", "images": ["~a\\u0000b"]}\n', "cannot be read: embedded null"),
        (GOOD + "\n\ufeff" + GOOD.replace('"a"', '"b"') + "\n", "line 2 starts with a byte order"),
        (None, "Cannot read input 'in.jsonl': no such file"),
        # the item was answered without its image, a normal result (found by a probe)
        (GOOD[:-1] + ', "image": "a.png"}\n', "line 1 has the key 'image', which extract does"),
        (
            GOOD[:-1] + ', "Images": ["a.png"]}\n',
            "the key 'Images', which extract does not read: did you mean \"images\"?",
        ),
        (GOOD[:-1] + ', "img": "a.png"}\n', 'did you mean "images"?'),
        # an image's other usual names (found by mutation testing: none was held)
        (GOOD[:-1] + ', "imgs": ["a.png"]}\n', "key 'imgs', which extract does not read: did"),
        (GOOD[:-1] + ', "image_path": "a.png"}\n', "key 'image_path', which extract does not"),
        (GOOD[:-1] + ', "Image_Paths": ["a.png"]}\n', "key 'Image_Paths', which extract does"),
        (GOOD[:-1] + ', "imgaes": ["a.png"]}\n', 'did you mean "images"?'),  # a review
        (GOOD[:-1] + ', "images ": "a.png"}\n', 'did you mean "images"?'),
        (
            '{"id": "x", "Prompt": "p"}\n',
            "the key 'Prompt', which extract does not read: did you mean \"prompt\"?",
        ),
    ],
)
def test_bad_input_lines(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    content: str | None,
    needle: str,
) -> None:
    if content is not None:
        (tmp_path / "in.jsonl").write_text(content)
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert not (tmp_path / "out.jsonl").exists()
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--retries", "-2"], "--retries must be 0 or more"),
        # Both were accepted: a thread per item, or re-asking without end.
        (["--concurrency", "65"], "--concurrency must be at most 64, got 65: each item"),
        (["--concurrency", "9" * 30], f"--concurrency must be at most 64, got {'9' * 30}"),
        (["--retries", "11"], "--retries must be at most 10, got 11: each retry asks"),
        (["--retries", "9" * 30], f"--retries must be at most 10, got {'9' * 30}"),
    ],
)
def test_bad_options(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), Path("out.jsonl")), *args)
    assert result.returncode == 2
    assert_one_line_error(result, needle)


def test_an_output_that_is_the_input_is_refused(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), Path("in.jsonl")))
    assert result.returncode == 2
    assert_one_line_error(result, "is the input file")


def test_the_largest_concurrency_and_retries_are_accepted(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    write_items(tmp_path / "in.jsonl", 2)
    more = ["--concurrency", "64", "--retries", "10"]
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), Path("out.jsonl"), *more))
    assert result.returncode == 0, result.stderr
    assert len(lines(tmp_path / "out.jsonl")) == 2


def test_bad_schema_file(main_in_process: MainInProcess, tmp_path: Path) -> None:
    write_items(tmp_path / "in.jsonl", 1)
    (tmp_path / "bad.json").write_text("{nope")
    result = main_in_process(*extract(Path("bad.json"), Path("in.jsonl"), Path("out.jsonl")))
    assert result.returncode == 2
    assert_one_line_error(result, "bad.json", "not valid JSON")
    assert not (tmp_path / "out.jsonl").exists()


def test_output_that_is_not_ours_is_left_alone(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    target.write_text('{"some": "other data"}\n')
    result = main_in_process(*extract(schema_file, source, target))
    assert result.returncode == 2
    assert_one_line_error(result, "line 1 is not an extract result", "right --output file")
    assert target.read_text() == '{"some": "other data"}\n'


def test_partial_last_line_is_cut_off_when_resuming(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    source = write_items(tmp_path / "in.jsonl", 3)
    target = tmp_path / "out.jsonl"
    target.write_text(
        json.dumps({"id": "item-0", "result": {"name": "Ann", "age": 3}})
        + '\n{"id": "item-1", "res'
    )
    result = main_in_process(*extract(schema_file, source, target))
    assert result.returncode == 0, result.stderr
    assert "Removed an incomplete last line" in result.stderr
    assert_complete_output(target, {"item-0", "item-1", "item-2"})


def _start_slow_extract(
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
    *,
    stderr: int,
) -> tuple[list[str], subprocess.Popen[str], Path]:
    """Start ``extract`` over ``count`` items in a child process, the emulator slowed down.

    Returns the command (without ``--concurrency``), the child and the output path.
    """
    arguments, target = _slow_extract(emulator, schema_file, tmp_path, monkeypatch, count)
    command = [*script_path(), "--host", emulator.api_host, *arguments]
    child = subprocess.Popen(
        [*command, "--concurrency", "2"],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        # SIGINT as a terminal gives it (a test run in a background job passes it ignored),
        # and SIGHUP (ignored under ``nohup``).
        preexec_fn=_terminal_signals,
    )
    return command, child, target


def _slow_extract(
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> tuple[list[str], Path]:
    """Write ``count`` items and slow the emulator down; return ``extract``'s arguments
    (without ``--concurrency``) and the output path."""
    source = write_items(tmp_path / "in.jsonl", count)
    target = tmp_path / "out.jsonl"
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    return extract(schema_file, source, target), target


def _terminal_signals() -> None:
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _wait_for_lines(target: Path, count: int) -> None:
    """Wait (20 s at most) until the output has ``count`` complete lines."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        target.exists() and target.read_text().count("\n") >= count
    ):
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("sig", "status", "said"),
    [
        (signal.SIGTERM, 143, "Terminated (SIGTERM)"),
        (signal.SIGHUP, 129, "Hung up (SIGHUP: the terminal closed)"),
    ],
)
def test_sigterm_stops_the_run_as_ctrl_c_does(
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
    status: int,
    said: str,
) -> None:
    # SIGTERM ended the process at once: status -15 (143 in a shell), no message; SIGHUP
    # (a closed terminal, a dropped SSH session) likewise, with -1.
    count = 24
    _, child, target = _start_slow_extract(
        emulator, schema_file, tmp_path, monkeypatch, count, stderr=subprocess.PIPE
    )
    try:
        _wait_for_lines(target, 3)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=15)
    finally:
        child.kill()
    assert child.returncode == status, stderr
    assert "Traceback" not in stderr
    done = lines(target)
    assert 3 <= len(done) < count
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"outlines-lmstudio: error: {said}: {len(done)} items finished and "
        f"written to {target}; run the same command again to resume."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl",
        "out.jsonl",
        "person.schema.json",
    ]


@pytest.mark.usefixtures("sigint_default")
def test_a_closed_terminal_stops_the_run_and_keeps_its_results(
    emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The terminal showing the run's progress closed (an SSH session dropped): the kernel
    sends SIGHUP, and the progress display can no longer be drawn (EIO). The run stops as
    SIGTERM stops it: status 129, its finished results kept, no temporary file left."""
    count = 24
    arguments, target = _slow_extract(emulator, schema_file, tmp_path, monkeypatch, count)
    child = spawn_on_a_terminal(emulator.api_host, *arguments, "--concurrency", "2", cwd=tmp_path)
    try:
        _wait_for_lines(target, 3)
        assert hang_up(child) == (129, None)
    finally:
        child.close(force=True)
    done = lines(target)
    assert 3 <= len(done) < count
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.jsonl",
        "out.jsonl",
        "person.schema.json",
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_while_the_run_stops_neither_lose_the_count_nor_print_a_traceback(
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
) -> None:
    """Found by a probe: ``timeout`` signals the process, then its group, milliseconds
    apart; the second signal cut the stop short (the count was lost: "terminated (SIGTERM)."
    alone), and one after the message printed a traceback."""
    count = 24
    _, child, target = _start_slow_extract(
        emulator, schema_file, tmp_path, monkeypatch, count, stderr=subprocess.PIPE
    )
    try:
        _wait_for_lines(target, 3)
        child.send_signal(sig)
        child.send_signal(sig)  # back to back
        for _ in range(5):  # and while it reports and exits
            time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)
        _, stderr = child.communicate(timeout=15)
    finally:
        child.kill()
    assert "Traceback" not in stderr
    assert child.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    done = lines(target)
    stopped = "Terminated (SIGTERM)" if sig == signal.SIGTERM else "Interrupted"
    assert stderr.strip().splitlines()[-1] == (
        f"outlines-lmstudio: error: {stopped}: {len(done)} items finished and "
        f"written to {target}; run the same command again to resume."
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_exits_though_an_item_is_stuck_where_nothing_can_cancel_it(
    emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Found by a probe: an item whose image was a named pipe nobody writes to blocked its
    worker for good; the run said it stopped, then never exited (Python joins its worker
    threads at exit), and a second Ctrl-C printed a traceback. (A pipe is now refused as an
    image, so the stuck item here is a validator of the user's that never returns.)"""
    (tmp_path / "stuck.py").write_text(_STUCK_TYPE)
    source = tmp_path / "in.jsonl"
    items = [{"id": 1, "prompt": "a"}, {"id": 2, "prompt": "b"}]
    source.write_text("".join(json.dumps(item) + "\n" for item in items))
    target = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [
            *script_path(),
            "--host",
            emulator.api_host,
            "extract",
            "--type",
            "stuck:Person",
            "--input",
            str(source),
            "--output",
            str(target),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
        # A child of a test run may inherit SIGINT ignored (a background shell job): the
        # run under test must get it as a terminal would give it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for_lines(target, 1)  # one item is done: the other's validation never returns
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr
    assert "1 items finished and written to" in stderr
    assert len(lines(target)) == 1


_STUCK_TYPE = """
import threading

from pydantic import BaseModel, model_validator

_FIRST = threading.Lock()


class Person(BaseModel):
    name: str
    age: int

    @model_validator(mode="after")
    def stall_the_first(self):
        if _FIRST.acquire(blocking=False):
            threading.Event().wait()  # the first reply's validation never returns
        return self
"""


def test_killed_run_resumes_without_losing_or_repeating_results(
    emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 24
    command, child, target = _start_slow_extract(
        emulator, schema_file, tmp_path, monkeypatch, count, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_lines(target, 5)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    written = target.read_text()
    assert written.endswith("\n")
    done = lines(target)  # every line is complete JSON
    assert 5 <= len(done) < count
    assert all("result" in r for r in done)

    monkeypatch.setattr(emulator, "token_latency", 0.0)
    resumed = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=30, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"Skipping {len(done)} ids already in" in resumed.stderr
    assert_complete_output(target, {f"item-{i}" for i in range(count)})
    assert target.read_text().startswith(written)  # earlier results kept as they were


@pytest.mark.usefixtures("sigint_default")
def test_ctrl_c_keeps_finished_results(
    emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_items(tmp_path / "in.jsonl", 40)
    target = tmp_path / "out.jsonl"
    monkeypatch.setattr(emulator, "token_latency", 0.01)
    child = subprocess.Popen(
        [*script_path(), "--host", emulator.api_host, *extract(schema_file, source, target)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        target.exists() and target.read_text().count("\n") >= 2
    ):
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=15)
    assert child.returncode == 130
    finished = lines(target)
    assert f"Interrupted: {len(finished)} items finished and written to" in stderr
    assert "run the same command again to resume" in stderr
    assert "Traceback" not in stderr


def test_lost_server_stops_the_run_without_error_lines(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    source = write_items(tmp_path / "in.jsonl", 4)
    target = tmp_path / "out.jsonl"
    emulator.add_fault(Fault("predict", "drop", times=100))
    result = run_cli(*extract(schema_file, source, target))
    assert result.returncode == 3
    assert_one_line_error(result, "Lost the connection to LM Studio", "run the same command again")
    assert target.read_text() == ""  # nothing that looks like a result, nor an error per item


def test_a_silent_server_stops_the_run_without_error_lines(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by a probe: each item waited out the SDK's wait (60 s) and became an error
    line, so a run over many items went on for hours and then needed --retry-errors."""
    source = write_items(tmp_path / "in.jsonl", 4)
    target = tmp_path / "out.jsonl"
    emulator.add_fault(Fault("predict", "hang", times=100))
    limit = lms.get_sync_api_timeout()
    lms.set_sync_api_timeout(1)
    try:
        result = main_in_process(*extract(schema_file, source, target, "--concurrency", "1"))
    finally:
        lms.set_sync_api_timeout(limit)
    assert result.returncode == 1
    assert_one_line_error(result, "LM Studio sent nothing for 1 s", "run the same command again")
    assert target.read_text() == ""
    # The first item's wait (a second prediction may have started meanwhile), then the run
    # stopped: not every item waited.
    assert len(emulator.predictions) <= 2


def test_a_second_run_on_the_same_output_is_refused(
    emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 20
    command, first, target = _start_slow_extract(
        emulator, schema_file, tmp_path, monkeypatch, count, stderr=subprocess.PIPE
    )
    try:
        _wait_for_lines(target, 2)
        # Slowed to a crawl while the second run starts (a busy machine may take seconds to
        # start a Python process), so the first run is still running when it is checked.
        emulator.token_latency = 0.5
        second = subprocess.run(
            command, capture_output=True, text=True, env=cli_env(), timeout=30, check=False
        )
        emulator.token_latency = 0.01
        _, first_err = first.communicate(timeout=30)
    finally:
        first.kill()
        first.wait(timeout=10)
    assert first.returncode == 0, first_err
    assert second.returncode == 2
    assert_one_line_error(second, str(target), "another extract run")
    assert_complete_output(target, {f"item-{i}" for i in range(count)})


def test_a_new_output_another_run_is_making_is_refused_before_anything_is_asked(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by a probe: a new output file was made when the first result was ready, so a
    second run on it was refused only after it had looked up the model (11.7 s with a
    model that loads in 10 s), not at its check as for an existing file (2.8 s)."""
    from outlines_lmstudio.cli._jsonl import OutputFile

    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    with OutputFile(target) as first:  # a run that is starting: connecting, loading
        first.scan(source)
        result = run_cli(*extract(schema_file, source, target))
        assert result.returncode == 2
        assert_one_line_error(result, "out.jsonl", "another extract run")
        assert emulator.requests == []
        first.open()
    assert target.read_text() == ""


@pytest.mark.parametrize("retry", [False, True])
def test_output_locked_by_another_process_is_left_alone(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path, retry: bool
) -> None:
    import fcntl

    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    content = json.dumps({"id": "item-0", "error": {"type": "X", "message": "x"}}) + "\n"
    target.write_text(content)
    with target.open("rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        result = run_cli(*extract(schema_file, source, target, *(["--retry-errors"] * retry)))
    assert result.returncode == 2
    assert_one_line_error(result, "out.jsonl", "another extract run")
    assert target.read_text() == content
    assert emulator.requests == []


def test_the_lock_covers_a_new_file_and_a_rewritten_one(tmp_path: Path) -> None:
    import fcntl

    from outlines_lmstudio.cli._common import CliError
    from outlines_lmstudio.cli._jsonl import OutputFile

    def locked(path: Path) -> bool:
        with path.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
        return False

    source = write_items(tmp_path / "in.jsonl", 1)
    target = tmp_path / "out.jsonl"
    with OutputFile(target) as output:  # a new file: locked from its creation
        assert output.scan(source) is None
        output.open()
        assert locked(target)
    assert not locked(target)
    target.write_text(json.dumps({"id": "item-0", "error": {"type": "X", "message": "x"}}) + "\n")
    with OutputFile(target) as output:  # --retry-errors: the new file is locked before its rename
        output.scan(source)
        assert output.drop_errors({'"item-0"'}) == 1
        assert locked(target)
    assert not locked(target)
    late = tmp_path / "late.jsonl"
    with OutputFile(late) as output:
        assert output.scan(source) is None
        assert locked(late)  # made and locked by the scan: another run is refused at its own
        with OutputFile(late) as second, pytest.raises(CliError, match="another extract run"):
            second.scan(source)
    assert not late.exists()  # never opened (the run stopped before its first result)
    with OutputFile(late) as output:
        output.scan(source)
        late.unlink()  # removed by another program while the run started
        with pytest.raises(CliError, match="removed or replaced while extract was starting"):
            output.open()


@pytest.mark.parametrize("held", [False, True], ids=["another-program", "another-run"])
def test_a_new_output_that_appears_during_the_check_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held: bool
) -> None:
    """The file appears between the check's look (none there) and the check making it: it
    is never opened for writing nor removed, and the message says who has it (found by
    mutation testing: the exclusive create and the lock test were untested there)."""
    import fcntl

    from outlines_lmstudio.cli._common import CliError
    from outlines_lmstudio.cli._jsonl import OutputFile

    source = write_items(tmp_path / "in.jsonl", 1)
    target = tmp_path / "out.jsonl"
    content = json.dumps({"id": "item-0", "error": {"type": "X", "message": "theirs"}}) + "\n"
    holder: list[Any] = []
    is_dir = Path.is_dir

    def appearing(path: Path) -> bool:  # the check asks whether the folder exists
        if path == tmp_path and not target.exists():
            target.write_text(content)
            if held:  # another run made it and holds its lock
                holder.append(target.open("rb"))
                fcntl.flock(holder[0].fileno(), fcntl.LOCK_EX)
        return is_dir(path)

    monkeypatch.setattr(Path, "is_dir", appearing)
    expected = "another extract run" if held else "appeared while extract was starting"
    try:
        with OutputFile(target) as output, pytest.raises(CliError, match=expected):
            output.scan(source)
    finally:
        for each in holder:
            each.close()
    assert target.read_text() == content


def test_retry_errors_keeps_the_errors_of_ids_not_in_the_input(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    source = write_items(tmp_path / "in.jsonl", 1)  # only item-0
    target = tmp_path / "out.jsonl"
    errors = [
        json.dumps({"id": f"item-{i}", "error": {"type": "ParseError", "message": "x"}}) + "\n"
        for i in range(3)
    ]
    result_line = json.dumps({"id": "done", "result": {"name": "Ann", "age": 3}}) + "\n"
    done_error = json.dumps({"id": "done", "error": {"type": "X", "message": "earlier"}}) + "\n"
    target.write_text("".join(errors) + result_line + done_error)
    result = run_cli(*extract(schema_file, source, target, "--retry-errors"))
    assert result.returncode == 0, result.stderr
    assert "Retrying 1 id whose" in result.stderr
    text = target.read_text()
    assert text.startswith(errors[1] + errors[2] + result_line + done_error)  # kept, in order
    redone = lines(target)[4:]
    assert [(r["id"], "result" in r) for r in redone] == [("item-0", True)]
    assert len(emulator.predictions) == 1


def test_input_lines_end_at_newline_only(tmp_path: Path) -> None:
    from outlines_lmstudio.cli._jsonl import read_items

    source = tmp_path / "in.jsonl"
    prompts = ["a\u2028b", "c\u2029d", "e\u0085f", "g\x1ch"]
    source.write_bytes(
        "".join(
            json.dumps({"id": i, "prompt": p}, ensure_ascii=False) + "\r\n"
            for i, p in enumerate(prompts)
        ).encode()
    )
    items = read_items(source)
    assert [(item.prompt, item.line) for item in items] == [
        (p, i + 1) for i, p in enumerate(prompts)
    ]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            GOOD.encode() + b"\n" + '{"id": 2, "prompt": "café"}\n'.encode("latin-1"),
            "in.jsonl, line 2 is not UTF-8 text (the byte 0xe9): convert it to UTF-8",
        ),
        (
            (GOOD + "\n").encode("utf-16"),
            "in.jsonl is UTF-16 text: save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8`)",
        ),
        (  # was called UTF-16 (found by a probe)
            (GOOD + "\n").encode("utf-32"),
            "in.jsonl is UTF-32 text: save it as UTF-8 (e.g. `iconv -f utf-32 -t utf-8`)",
        ),
        (  # no byte order mark: it decoded as UTF-8 with NULs (found by a session's review)
            (GOOD + "\n").encode("utf-16-le"),
            "in.jsonl is UTF-16 text: save it as UTF-8 (e.g. `iconv -f utf-16le -t utf-8`)",
        ),
        (
            (GOOD + "\n").encode("utf-32-be"),
            "in.jsonl is UTF-32 text: save it as UTF-8 (e.g. `iconv -f utf-32be -t utf-8`)",
        ),
    ],
)
def test_input_that_is_not_utf8_names_the_line_and_the_fix(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    schema_file: Path,
    tmp_path: Path,
    content: bytes,
    needle: str,
) -> None:
    # It was "Cannot read input ...: 'utf-8' codec can't decode byte 0xe9 in position 39".
    (tmp_path / "in.jsonl").write_bytes(content)
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert not (tmp_path / "out.jsonl").exists()
    assert emulator.predictions == []


def test_input_with_a_byte_order_mark_is_read(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    # As Windows editors (and PowerShell's UTF8 encoding) save it; it was "not valid JSON
    # (Unexpected UTF-8 BOM (decode using utf-8-sig) ...)".
    (tmp_path / "in.jsonl").write_text(GOOD + "\n", encoding="utf-8-sig")
    schema_file.write_text(schema_file.read_text(), encoding="utf-8-sig")
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert_complete_output(tmp_path / "out.jsonl", {"a"})


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_input_says_so(
    main_in_process: MainInProcess,
    schema_file: Path,
    tmp_path: Path,
    content: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It said "Nothing to do: all 0 ids are already in out.jsonl."
    (tmp_path / "in.jsonl").write_text(content)
    result = main_in_process(*extract(schema_file, Path("in.jsonl"), tmp_path / "out.jsonl"))
    assert result.returncode == 0
    assert "Nothing to do: in.jsonl has no items (it is empty or blank)." in result.stderr
    assert not (tmp_path / "out.jsonl").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(content))
    result = main_in_process(*extract(schema_file, Path("-"), tmp_path / "out.jsonl"))
    assert "Nothing to do: standard input has no items (it is empty or blank)." in result.stderr


def test_the_progress_rate_and_eta_are_averages_since_the_start() -> None:
    # Items in flight together finish together: Rich's own speed divides by the time
    # between the first and the last item finished, and read 2 items in 1 s as 100,000/s.
    from rich.progress import Progress

    from outlines_lmstudio.cli._extract import _eta_column, _rate_column

    now = [0.0]
    progress = Progress(get_time=lambda: now[0])
    task_id = progress.add_task("extract", total=40)
    now[0] = 1.0
    progress.update(task_id, advance=1)
    now[0] = 1.00001
    progress.update(task_id, advance=1)
    task = progress.tasks[0]
    assert task.speed is not None
    assert task.speed > 10_000  # what the bar used to show
    assert str(_rate_column().render(task)) == "2.0 items/s"
    assert str(_eta_column().render(task)) == "0:00:19"  # 38 items left at 2 per second

    now[0] = 20.0
    progress.update(task_id, advance=38)
    task = progress.tasks[0]
    assert str(_rate_column().render(task)) == "2.0 items/s"  # 40 items in 20 s
    assert str(_eta_column().render(task)) == "0:00:00"


def test_a_result_with_a_lone_surrogate_escape_is_written_escaped(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    # A reply holding a lone surrogate escape (not Unicode text) is invalid, as Pydantic
    # has it: an error line whose raw reply keeps the escape. The run once stopped on it
    # with "unexpected UnicodeEncodeError ... a bug", then wrote it as a result.
    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    emulator.script(
        TEXT, ['{"name": "a \\udc00", "age": 3}', '{"name": "b \\udc00 toolong, too long"}']
    )
    args = extract(schema_file, source, target, "-m", TEXT, "--retries", "0")
    result = run_cli(*args, "--concurrency", "1")
    assert result.returncode == 1, result.stderr
    assert "unexpected" not in result.stderr
    text = target.read_bytes().decode("utf-8")
    assert "\\udc00" in text
    records = {r["id"]: r for r in lines(target)}
    assert "lone surrogate" in records["item-0"]["error"]["errors"][0]
    assert records["item-0"]["error"]["raw"] == '{"name": "a \\udc00", "age": 3}'
    assert records["item-1"]["error"]["raw"] == '{"name": "b \\udc00 toolong, too long"}'


def test_a_line_a_full_disk_cuts_short_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe (a 4 KiB tmpfs): the output ended in half a line, which no JSON
    reader takes, though a line is complete JSON or absent. The OS's write is stood in for:
    it writes part of the line, then the disk is full."""
    import errno

    from outlines_lmstudio.cli._common import CliError
    from outlines_lmstudio.cli._jsonl import OutputFile

    source = write_items(tmp_path / "in.jsonl", 3)
    target = tmp_path / "out.jsonl"
    target.write_text('{"id": "item-0", "result": {}}')  # its last line not yet ended
    real_write, calls = os.write, []

    def write_then_fill(fd: int, data: Any) -> int:
        calls.append(bytes(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, "No space left on device")

    with OutputFile(target) as output:
        output.scan(source)
        output.open()
        monkeypatch.setattr(os, "write", write_then_fill)
        with pytest.raises(CliError, match="No space left on device"):
            output.append({"id": "item-1", "result": {"a": 1}})
        assert target.read_text() == '{"id": "item-0", "result": {}}'  # as it was
        monkeypatch.setattr(os, "write", real_write)
        output.append({"id": "item-2", "result": {}})  # once there is room: whole lines
    assert lines(target) == [{"id": "item-0", "result": {}}, {"id": "item-2", "result": {}}]
    assert calls[0].startswith(b"\n")  # the earlier last line was to be ended in that write


def test_items_go_to_the_pool_a_few_at_a_time() -> None:
    """Found by a probe: every item was submitted at once; 2 million held 3 GB of futures."""
    import concurrent.futures
    import itertools
    import threading

    from outlines_lmstudio.cli._extract import _as_finished

    lock, held, most = threading.Lock(), [0], [0]

    class Counting(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            with lock:
                held[0] += 1
                most[0] = max(most[0], held[0])
            return super().submit(fn, *args, **kwargs)

    def run(item: Any) -> None:
        time.sleep(0.001)

    waiting: Any = iter(range(200))
    with Counting(2) as pool:
        running = {pool.submit(run, item) for item in itertools.islice(waiting, 4)}
        finished = 0
        for future in _as_finished(running, pool, run, waiting):
            future.result()
            finished += 1
            with lock:
                held[0] -= 1
    assert finished == 200
    assert most[0] <= 5  # the window of 4, and the one submitted as one finishes


def test_output_to_a_terminal_shows_8_bit_controls_as_json_escapes(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: ``--output -`` on a terminal wrote a reply's U+009B (a CSI to some
    terminals) as it is, where ``generate`` writes JSON's ``\\u009b``; a line is still JSON."""
    import pexpect

    emulator.script(TEXT, ['{"name": "a\\u009b2Jb\\u007fc"}'])
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string"}}}))
    source = write_items(tmp_path / "in.jsonl", 1)
    command = [*script_path(), "--host", emulator.api_host]
    command += extract(schema, source, Path("-"), "-m", TEXT)
    child = pexpect.spawn(command[0], command[1:], env=cli_env(), encoding="utf-8", timeout=15)
    child.expect(pexpect.EOF)
    child.close()
    shown = child.before or ""
    assert child.exitstatus == 0, shown
    (line,) = [text for text in shown.splitlines() if text.startswith('{"id"')]
    assert "\x9b" not in line
    assert "\x7f" not in line
    assert json.loads(line)["result"] == {"name": "a\x9b2Jb\x7fc"}


def test_results_on_the_terminal_are_not_drawn_over_by_the_progress_bar(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: with ``--output -`` on a terminal, the results were written beside
    the live progress bar, and most lines were glued to one of its frames. There is no bar
    then; the summary still comes."""
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(PERSON_SCHEMA))
    source = write_items(tmp_path / "in.jsonl", 6)
    emulator.add_fault(Fault("predict", "delay", seconds=0.3, times=6))  # the bar redraws
    command = [*script_path(), "--host", emulator.api_host, *extract(schema, source, Path("-"))]
    env = cli_env(TERM="xterm-256color", COLUMNS="100", LINES="40", NO_COLOR="1")
    drawn = run_on_a_terminal(command, tmp_path, env)
    shown = drawn.replace("\r\n", "\n").splitlines()
    results = [line for line in shown if '"id": "item-' in line]
    assert len(results) == 6, drawn
    assert all(line.startswith('{"id": "item-') for line in results), drawn
    assert "━" not in drawn  # no bar
    assert "Done in" in drawn
    # Standard error elsewhere (a log): the bar's last line is written there, as ever.
    emulator.add_fault(Fault("predict", "delay", seconds=0.3, times=6))
    drawn = run_on_a_terminal(command, tmp_path, env, stderr=tmp_path / "log")
    assert len([line for line in drawn.splitlines() if line.startswith('{"id": "item-')]) == 6
    logged = (tmp_path / "log").read_text()
    assert [line for line in logged.splitlines() if line.startswith("extract")], logged


@pytest.mark.parametrize("asks", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_a_ci_log_gets_no_progress_frames(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path, asks: str
) -> None:
    """Found by a probe: under ``FORCE_COLOR=1`` or ``TTY_COMPATIBLE=1`` (set by CI runners)
    with standard error not a terminal, rich drew the progress bar into the log 10 times a
    second (``TTY_INTERACTIVE=1`` too, and its last frame then ran into "Done"). Only the
    final line is written."""
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(PERSON_SCHEMA))
    source = write_items(tmp_path / "in.jsonl", 4)
    emulator.add_fault(Fault("predict", "delay", seconds=0.3, times=4))
    env = cli_env(**{asks: "1", "TERM": "xterm-256color", "TTY_INTERACTIVE": "1"})
    result = run_cli(*extract(schema, source, tmp_path / "out.jsonl"), env=env)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr  # no frame drawn over another
    assert "\x1b[2K" not in result.stderr  # nor a line erased for one (colours stay asked for)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr).splitlines()
    bars = [line for line in shown if line.startswith("extract")]
    assert len(bars) == 1, result.stderr
    assert "4/4" in bars[0]
    assert bars[0].rstrip().endswith("0:00:00")  # "Done" on a line of its own


@pytest.mark.parametrize(
    ("columns", "shown"),
    [
        (20, "6/6 0 failed"),
        (40, "extract 6/6 0 failed ETA 0:00:00"),
        (60, "extract 6/6 0 failed "),  # then the rate, then "ETA 0:00:00"
        (80, "extract ━━━━━━━━━━ 6/6 0 failed "),
    ],
)
def test_the_progress_line_fits_a_narrow_terminal(
    emulator: LMStudioEmulator, tmp_path: Path, columns: int, shown: str
) -> None:
    """Found by a probe: rich squeezed every column into a narrow terminal, so the item
    count was gone at 20 columns and the line wrapped at 60. Columns are left out instead,
    the least needed first; the count and the failures stay."""
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(PERSON_SCHEMA))
    source = write_items(tmp_path / "in.jsonl", 6)
    command = [*script_path(), "--host", emulator.api_host, "extract", "--schema", str(schema)]
    command += ["--input", str(source), "--output", str(tmp_path / "out.jsonl")]
    env = cli_env(TERM="xterm-256color", COLUMNS=str(columns), LINES="20", NO_COLOR="1")
    drawn = run_on_a_terminal(command, tmp_path, env)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn)
    frames = [f for f in re.split(r"[\r\n]+", plain) if "6/6" in f]
    assert frames, drawn
    last = frames[-1].rstrip()
    assert last.startswith(shown), drawn
    assert len(last) <= columns
    if columns >= 40:
        assert last.endswith("ETA 0:00:00"), drawn  # on the same line: nothing wrapped


@pytest.mark.parametrize(
    ("total", "done", "failed", "hours"),
    [(1000, 500, 0, 0.02), (100_000, 54_321, 2000, 5), (1_000_000, 999_999, 12_345, 30)],
)
def test_the_progress_line_fits_every_width_for_large_counts(
    total: int, done: int, failed: int, hours: float
) -> None:
    """Found by a review: the layouts were chosen by widths fixed for 1,000 items, so
    1,000,000 read "12345/100…" at 74 columns, and 10,000 with failures wrapped at 72. The
    widest layout whose line fits is drawn: one line, the count whole, and the failures
    too wherever the count and they fit."""
    from rich.console import Console

    from outlines_lmstudio.cli._extract import progress_display

    count, failures = f"{done}/{total}", f"{failed} failed"
    for width in range(20, 201):
        screen = io.StringIO()
        console = Console(file=screen, width=width, force_terminal=True, color_system=None)
        progress = progress_display(disable=True, console=console)
        task = progress.add_task("extract", total=total, failed=failed)
        progress.update(task, completed=done)
        progress.tasks[0].start_time = time.monotonic() - hours * 3600
        console.print(progress.make_tasks_table(progress.tasks))
        (line,) = screen.getvalue().splitlines()  # one line: nothing wrapped
        assert len(line) <= width
        assert count in line, (width, line)
        if width > len(count) + len(failures) + 2:
            assert failures in line, (width, line)


def test_a_ctrl_c_while_the_progress_display_starts_leaves_nothing_drawing() -> None:
    """Found by a probe: a Ctrl-C inside rich's start (waiting for its refresh thread)
    raised out of the ``with`` statement's entry, so nothing stopped the display: its
    thread drew on after the program's message (and, in the test suite, failed another
    test). Raised at each point of the start where CPython runs a signal handler, it
    leaves no refresh thread behind."""
    import itertools
    import threading

    from rich.console import Console
    from rich.live import Live

    from outlines_lmstudio.cli._extract import progress_display

    from ..raising import RaiseAt

    # rich's start, and the wait for its thread where a probe's Ctrl-C landed (inside
    # threading's own code a Ctrl-C can break threading itself, so it is not raised there).
    starting = {Live.start.__code__, threading.Event.wait.__code__}

    def drawing() -> list[threading.Thread]:
        # Alive: one cut short inside Thread.start may stay listed, never started.
        found = threading.enumerate()
        return [t for t in found if type(t).__module__ == "rich.live" and t.is_alive()]

    def enter() -> None:
        console = Console(file=io.StringIO(), width=80, force_terminal=True)
        with progress_display(disable=False, console=console):
            pass

    landed = 0
    for at in itertools.count(1):
        raiser = RaiseAt(at, lambda code: code in starting, KeyboardInterrupt)
        raiser.run(enter)
        if not raiser.raised:
            break
        landed += 1
        deadline = time.monotonic() + 5
        while drawing() and time.monotonic() < deadline:  # a stopped one ends at its wake
            time.sleep(0.01)
        assert not drawing(), at
    assert landed >= 3


def test_a_stall_past_the_sdk_s_own_limit_does_not_stop_the_run(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """Found by a probe: a Ctrl-Z of 70 s (past the SDK's 60 s limit on each wait) stopped a
    run of 40 items after the first, as "LM Studio sent nothing for 60 s", with the replies
    in the socket. The item is asked again, and the run goes on."""
    source = write_items(tmp_path / "in.jsonl", 2)
    target = tmp_path / "out.jsonl"
    with StallPastTheSdkLimit(emulator) as stall:
        result = main_in_process(*extract(schema_file, source, target, "--concurrency", "1"))
    assert stall.held > 2.3
    assert result.returncode == 0, result.stderr
    assert [record["id"] for record in lines(target)] == ["item-0", "item-1"]
    assert all("result" in record for record in lines(target))
    assert [p.stop_reason for p in emulator.predictions] == ["userStopped", "eosFound", "eosFound"]


def test_counts_of_one_id_are_singular(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, tmp_path: Path
) -> None:
    """A probe: with one id the messages said "all 1 ids are already in" and "Skipping 1 ids"."""
    source = write_items(tmp_path / "in.jsonl", 1)
    target = tmp_path / "out.jsonl"
    emulator.script(TEXT, ['{"name": "No age"}'])
    first = main_in_process(*extract(schema_file, source, target, "-m", TEXT, "--retries", "0"))
    assert first.returncode == 1
    again = main_in_process(*extract(schema_file, source, target))
    assert again.returncode == 1
    assert "Nothing to do: the one id is already in" in again.stderr
    assert ", as an error (--retry-errors redoes it)." in again.stderr
    assert "1 of the input's 1 id failed" not in again.stderr  # said only after a run's items
    emulator.script(TEXT, ['{"name": "Ann", "age": 5}'])
    retried = main_in_process(*extract(schema_file, source, target, "-m", TEXT, "--retry-errors"))
    assert retried.returncode == 0, retried.stderr
    assert "Retrying 1 id whose output line was an error." in retried.stderr
    write_items(source, 2)
    resumed = main_in_process(*extract(schema_file, source, target, "-m", TEXT))
    assert resumed.returncode == 0, resumed.stderr
    assert "Skipping 1 id already in" in resumed.stderr
    assert "(1 id skipped: already there)." in resumed.stderr
