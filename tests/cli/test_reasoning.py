"""The CLI with reasoning models: only the answer is parsed, the thinking shown or kept apart."""

from __future__ import annotations

import json
from pathlib import Path

import pexpect
import pytest

from outlines_lmstudio.testing import LMStudioEmulator, ReasoningReply

from . import test_chat
from .conftest import MainInProcess
from .helpers import TEXT, lines

spawn = test_chat.spawn  # the fixture, shared with this module

pytestmark = pytest.mark.timeout(40)

ANSWER = '{"name": "Ada", "age": 36}'
THINKING = 'Draft: {"name": "Bob", "age": 1}? No, Ada.'


def reasoned(answer: str, form: str = "marker-inline") -> ReasoningReply:
    return ReasoningReply(answer, THINKING, form=form)


@pytest.mark.parametrize("form", ["think", "marker", "marker-inline", "mlx", "harmony"])
@pytest.mark.parametrize("stream", [False, True])
def test_generate_parses_only_the_answer(
    emulator: LMStudioEmulator,
    main_in_process: MainInProcess,
    schema_file: Path,
    form: str,
    stream: bool,
) -> None:
    emulator.script(TEXT, [reasoned(ANSWER, form)])
    args = ["generate", "Who?", "-m", TEXT, "--schema", str(schema_file)]
    result = main_in_process(*args, *(["--stream"] if stream else []))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ada", "age": 36}
    assert "Bob" not in result.stdout


def test_generate_plain_text_prints_only_the_answer(
    emulator: LMStudioEmulator, main_in_process: MainInProcess
) -> None:
    emulator.script(TEXT, [reasoned("Paris.", "harmony")])
    result = main_in_process("generate", "Capital?", "-m", TEXT)
    assert (result.returncode, result.stdout) == (0, "Paris.\n")


@pytest.mark.parametrize("form", ["think", "marker", "marker-inline", "harmony"])
@pytest.mark.parametrize("stream", [False, True])
def test_complete_prints_only_the_answer(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, form: str, stream: bool
) -> None:
    """Found by a probe: ``complete`` skipped typed reasoning only, and printed LM Studio's
    reasoning marker and Harmony control text as text."""
    emulator.script(TEXT, [reasoned("Paris.", form)])
    result = main_in_process("complete", "Capital?", "-m", TEXT, *(["--stream"] if stream else []))
    assert (result.returncode, result.stdout) == (0, "Paris.\n"), result.stderr


@pytest.mark.parametrize(
    "text",
    [
        "<think> is the tag DeepSeek-R1 opens its reasoning with.",
        "Close the block with </think> and then answer.",
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_complete_prints_think_tags_in_untyped_text_as_the_text_they_are(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, text: str, stream: bool
) -> None:
    """Found by a probe: a raw completion that opened with <think> printed nothing, with
    status 0, and a bare </think> cut off what came before it: a completion continues the
    prompt's text, so untyped tags are that text."""
    emulator.script(TEXT, [text])
    result = main_in_process("complete", "The tag", "-m", TEXT, *(["--stream"] if stream else []))
    assert (result.returncode, result.stdout) == (0, text + "\n"), result.stderr


def test_generate_reports_a_budget_spent_on_reasoning(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, schema_file: Path
) -> None:
    emulator.script(TEXT, [reasoned(ANSWER, "think")])
    args = ["generate", "Who?", "-m", TEXT, "--schema", str(schema_file), "--max-tokens", "3"]
    result = main_in_process(*args)
    assert result.returncode != 0
    assert "spent on reasoning" in result.stderr


@pytest.mark.parametrize("form", ["think", "marker", "harmony", "mlx"])
@pytest.mark.parametrize("stream", [False, True])
def test_complete_reports_a_budget_spent_on_reasoning(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, form: str, stream: bool
) -> None:
    """Found by a probe: it printed an empty line with status 0 (generate said why)."""
    emulator.script(TEXT, [reasoned("Paris.", form)])
    args = ["complete", "Once", "-m", TEXT, "--max-tokens", "3", *(["--stream"] if stream else [])]
    result = main_in_process(*args)
    assert result.returncode == 1, result.stdout
    assert "spent on reasoning" in result.stderr
    assert "--max-tokens" in result.stderr
    # Found by a probe: it counted "0 of them reasoning" (generate counted them all).
    assert "(3 tokens predicted, 3 of them reasoning)" in result.stderr
    assert result.stderr.rstrip().endswith("without thinking."), result.stderr


def _items(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "prompt": f"Person {i}"}) + "\n" for i in range(count))
    )
    return path


def test_extract_parses_the_answer_and_records_reasoning_when_asked(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    source = _items(tmp_path, 2)
    emulator.script(TEXT, [reasoned(ANSWER)] * 4)
    base = ["extract", "-m", TEXT, "--schema", str(schema_file), "--input", str(source)]
    plain = main_in_process(*base, "--output", str(tmp_path / "plain.jsonl"))
    assert plain.returncode == 0, plain.stderr
    assert [r["result"] for r in lines(tmp_path / "plain.jsonl")] == [json.loads(ANSWER)] * 2
    assert all("reasoning" not in r for r in lines(tmp_path / "plain.jsonl"))
    kept = main_in_process(*base, "--output", str(tmp_path / "kept.jsonl"), "--reasoning")
    assert kept.returncode == 0, kept.stderr
    records = lines(tmp_path / "kept.jsonl")
    assert [(r["result"], r["reasoning"]) for r in records] == [(json.loads(ANSWER), THINKING)] * 2


def test_extract_records_the_reasoning_of_a_failed_line(
    emulator: LMStudioEmulator, main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    source = _items(tmp_path, 1)
    emulator.script(TEXT, [reasoned("")])
    target = tmp_path / "out.jsonl"
    args = ["extract", "-m", TEXT, "--schema", str(schema_file), "--input", str(source)]
    result = main_in_process(*args, "--output", str(target), "--reasoning")
    assert result.returncode == 1
    (record,) = lines(target)
    assert record["error"]["type"] == "EmptyAnswerError"
    assert record["reasoning"] == THINKING


def test_extract_reasoning_refuses_retries(
    main_in_process: MainInProcess, schema_file: Path, tmp_path: Path
) -> None:
    source = _items(tmp_path, 1)
    args = ["extract", "--schema", str(schema_file), "--input", str(source)]
    result = main_in_process(
        *args, "--output", str(tmp_path / "o.jsonl"), "--reasoning", "--retries", "2"
    )
    assert result.returncode != 0
    assert "cannot re-ask" in result.stderr


@pytest.mark.parametrize("hide", [False, True])
def test_chat_shows_or_hides_reasoning_and_saves_it_apart(
    request: pytest.FixtureRequest, emulator: LMStudioEmulator, tmp_path: Path, hide: bool
) -> None:
    emulator.script(TEXT, [reasoned("Paris is the capital.", "think"), "Second answer."])
    spawn = request.getfixturevalue("spawn")  # test_chat's pseudo-terminal fixture
    child = spawn("-m", TEXT, *(["--hide-reasoning"] if hide else []))
    child.expect_exact("you> ")
    child.sendline("Capital of France?")
    child.expect_exact("you> ")
    shown = child.before
    assert "Paris is the capital." in shown
    assert ("Draft:" in shown) != hide
    assert ("(thinking...)" in shown) == hide
    assert "<think>" not in shown
    child.sendline("And again?")
    child.expect_exact("you> ")
    child.sendline("/save chat.json")
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    messages = json.loads((tmp_path / "chat.json").read_text())["messages"]
    assert [(m["role"], m["content"], m.get("reasoning")) for m in messages] == [
        ("user", "Capital of France?", None),
        ("assistant", "Paris is the capital.", THINKING),
        ("user", "And again?", None),
        ("assistant", "Second answer.", None),
    ]
    sent = emulator.predictions[-1].messages  # earlier thinking is not sent back
    assert THINKING not in json.dumps(sent)
