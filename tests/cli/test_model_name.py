"""The model the user named is what each request asks for, not the instance found first.

Found by a probe: with ``qwen2.5-7b-instruct`` loaded as the instance ``my-qwen``, the
commands pinned ``my-qwen``; once LM Studio unloaded it (its UI, an idle TTL), every later
item or turn failed with "no model matching 'my-qwen'", a name the user never typed,
while the library, given the model key, loads the model again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import RunCli
from .helpers import MLX, PERSON_SCHEMA, TEXT, VISION, lines, roles_and_texts

pytestmark = pytest.mark.timeout(40)

INSTANCE = "my-qwen"

UnloadBefore = Callable[[str, int], None]


def answered_by(emulator: LMStudioEmulator) -> list[str]:
    """The instance that answered each prediction (the one refused on the unload is left out)."""
    return [p.model for p in emulator.predictions if p.error is None]


@pytest.fixture
def unload_before(emulator: LMStudioEmulator) -> UnloadBefore:
    """Load ``TEXT`` as the instance ``my-qwen`` only; arm its unload before a request.

    ``unload_before(endpoint, n)`` unloads it right before the ``n``-th request to
    ``endpoint`` for the model (by its key or ``my-qwen``) is served, the earlier ones
    spending a delay of 0 s: as if it had been unloaded in LM Studio between the
    ``n - 1``-th item and the ``n``-th.
    """
    emulator.unload(TEXT)
    emulator.load(TEXT, INSTANCE)

    def arm(endpoint: str, number: int) -> None:
        if number > 1:
            emulator.add_fault(Fault(endpoint, "delay", model=TEXT, times=number - 1))
        emulator.add_fault(Fault(endpoint, "unload", model=TEXT))

    return arm


def test_extract_goes_on_after_the_instance_is_unloaded_between_items(
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    unload_before: UnloadBefore,
    schema_file: Path,
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"Person {i}"}) + "\n" for i in "abc"))
    target = tmp_path / "out.jsonl"
    unload_before("predict", 2)
    result = run_cli(
        "extract", "-m", TEXT, "--schema", str(schema_file), "--input", str(source),
        "--output", str(target), "--concurrency", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = lines(target)
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert all(
        "error" not in r and set(r["result"]) == set(PERSON_SCHEMA["properties"]) for r in records
    )
    assert INSTANCE not in result.stderr
    # The first item went to the instance found; the others to the model loaded again.
    assert answered_by(emulator) == [INSTANCE, TEXT, TEXT]


def test_chat_goes_on_after_the_instance_is_unloaded_between_turns(
    run_cli: RunCli, emulator: LMStudioEmulator, unload_before: UnloadBefore
) -> None:
    unload_before("predict", 2)
    result = run_cli("chat", "-m", TEXT, stdin="Hello\nAnd again\n/exit\n", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "!" not in result.stdout.replace(f"{TEXT}> ", "")  # no problem was reported
    assert answered_by(emulator) == [INSTANCE, TEXT]
    assert [role for role, _ in roles_and_texts(emulator.predictions[-1].messages)] == [
        "user",
        "assistant",
        "user",
    ]


def test_generate_loads_the_named_model_again(
    run_cli: RunCli, emulator: LMStudioEmulator, unload_before: UnloadBefore
) -> None:
    unload_before("predict", 1)  # after the command found the instance, before it asks
    generated = run_cli("generate", "-m", TEXT, "--max-tokens", "3", "hi")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.strip()
    assert answered_by(emulator) == [TEXT]


def test_complete_loads_the_named_model_again(
    run_cli: RunCli, emulator: LMStudioEmulator, unload_before: UnloadBefore
) -> None:
    unload_before("getOrLoad", 2)  # complete asks for the model again, by name
    completed = run_cli("complete", "-m", TEXT, "--max-tokens", "3", "Once")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip()


def test_with_no_model_named_the_key_of_the_one_picked_is_kept(
    run_cli: RunCli,
    emulator: LMStudioEmulator,
    unload_before: UnloadBefore,
    schema_file: Path,
    tmp_path: Path,
) -> None:
    # The only LLM loaded is the one picked; once it is unloaded, its model is loaded again
    # (not "any loaded LLM", which would be none here, or could change between items).
    emulator.unload(VISION)
    emulator.unload(MLX)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "prompt": f"Person {i}"}) + "\n" for i in "ab"))
    target = tmp_path / "out.jsonl"
    unload_before("predict", 2)
    result = run_cli(
        "extract", "--schema", str(schema_file), "--input", str(source), "--output", str(target),
        "--concurrency", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [("error" in r) for r in lines(target)] == [False, False]
    assert answered_by(emulator) == [INSTANCE, TEXT]
