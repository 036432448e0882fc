"""``generate``: free text, structured output, images, streaming and the error paths."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from outlines_lmstudio.testing import EmulatedModel, Fault, LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import (
    MLX,
    PERSON_SCHEMA,
    TEXT,
    UNLOADED,
    VISION,
    StallPastTheSdkLimit,
    assert_one_line_error,
    broken_png,
    cli_env,
    hang_up,
    png,
    roles_and_texts,
    run_on_a_terminal,
    script_path,
    spawn_on_a_terminal,
    text_commands,
)

pytestmark = pytest.mark.timeout(30)


def test_free_text(run_cli: RunCli, emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT, ["Hello from the model."])
    result = run_cli("generate", "-m", TEXT, "--system", "Be brief", "--temperature", "0.2", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello from the model.\n"
    (prediction,) = emulator.predictions
    assert [m["role"] for m in prediction.messages] == ["system", "user"]
    assert prediction.config["llm.prediction.temperature"] == pytest.approx(0.2)
    assert prediction.structured is None


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "-m", TEXT, "--max-tokens", "3", "Hi"],
        ["generate", "-m", TEXT, "--stream", "--max-tokens", "3", "Hi"],
        ["complete", "-m", TEXT, "--max-tokens", "3", "Once"],
        ["complete", "-m", TEXT, "--stream", "--max-tokens", "3", "Once"],
    ],
    ids=["generate", "generate-stream", "complete", "complete-stream"],
)
def test_a_text_reply_cut_off_by_max_tokens_is_said_on_stderr(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, args: list[str]
) -> None:
    """Found by a probe: three words came out, and nothing said they were cut off (chat
    says so; a structured reply cut off fails)."""
    emulator.script(TEXT, ["one two three four five", "six seven"])
    cut = main_in_process(*args)
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == "one two three\n"
    note = "outlines-lmstudio: note: the reply was cut off: its token limit was reached"
    assert cut.stderr == note + " (--max-tokens).\n"
    whole = main_in_process(*[a for a in args if a not in ("--max-tokens", "3")])
    assert (whole.stdout, whole.stderr) == ("six seven\n", "")


def test_stream_prints_fragments(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT, ["one two three four"])
    result = main_in_process("generate", "-m", TEXT, "--stream", "--max-tokens", "50", "Count")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "one two three four\n"
    assert len(emulator.predictions[0].fragments) > 1


def test_schema_result_is_valid_pretty_json(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path
) -> None:
    result = run_cli("generate", "--schema", str(schema_file), "Invent a person")
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)
    jsonschema.validate(value, PERSON_SCHEMA)
    assert result.stdout.startswith("{\n  ")  # pretty-printed
    structured = emulator.predictions[0].structured
    assert structured is not None
    assert structured["jsonSchema"]["required"] == ["name", "age"]


@pytest.mark.parametrize("command", ["generate", "extract"])
def test_a_schema_given_as_json_on_the_command_line(
    run_cli: RunCli, emulator: LMStudioEmulator, command: str
) -> None:
    """Found by a probe: ``--schema '{"type": "object", ...}'``, as users write it, was
    refused as "Cannot read schema file '{...}': no such file"."""
    emulator.script(TEXT, ['{"name": "Ada", "age": 36}'])
    schema = f"  {json.dumps(PERSON_SCHEMA, indent=1)}"  # white space before, lines within
    if command == "generate":
        result = run_cli("generate", "-m", TEXT, "--schema", schema, "Who?")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"name": "Ada", "age": 36}
    else:
        lines = '{"id": 1, "prompt": "Who?"}\n'
        result = run_cli(
            "extract", "-m", TEXT, "--schema", schema, "--input", "-", "--output", "-", stdin=lines
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"id": 1, "result": {"name": "Ada", "age": 36}}
    (prediction,) = emulator.predictions
    assert prediction.structured is not None
    assert prediction.structured["jsonSchema"]["required"] == ["name", "age"]


def test_a_file_named_like_json_is_still_read_as_a_file(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """A guard (it passed before ``--schema`` took JSON): a file of that name wins."""
    (tmp_path / "{person}.json").write_text(json.dumps(PERSON_SCHEMA))
    emulator.script(TEXT, ['{"name": "Ada", "age": 36}'])
    result = main_in_process("generate", "-m", TEXT, "--schema", "{person}.json", "Who?")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ada", "age": 36}


def test_stream_with_schema_prints_the_validated_object(
    main_in_process: MainInProcess, schema_file: Path
) -> None:
    result = main_in_process(
        "generate", "--schema", str(schema_file), "--stream", "Invent a person"
    )
    assert result.returncode == 0, result.stderr
    jsonschema.validate(json.loads(result.stdout), PERSON_SCHEMA)


def test_a_live_object_taller_than_the_terminal_leaves_no_frame_behind(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: rich drew the live display's last frame whole as it stopped, and a
    frame taller than the terminal stayed in the scrollback above the result (a Python repr
    of the object, 22 lines at 12), also after Ctrl-C. Frames are cropped to the terminal
    while the reply streams; the end draws none."""
    items = [f"item number {n}" for n in range(30)]
    emulator.script(TEXT, [json.dumps({"items": items})])
    schema = tmp_path / "items.schema.json"
    schema.write_text(
        json.dumps(
            {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"type": "string"}}},
                "required": ["items"],
            }
        )
    )
    command = [*script_path(), "--host", emulator.api_host, "generate", "-m", TEXT]
    command += ["--schema", str(schema), "--stream", "List"]
    env = cli_env(TERM="xterm-256color", COLUMNS="60", LINES="12", NO_COLOR="1")
    drawn = run_on_a_terminal(command, tmp_path, env)
    assert "\x1b[" in drawn  # drawn live, as on a terminal
    assert "'item number 29'" not in drawn  # no frame drew the end of the list
    assert drawn.replace("\r\n", "\n").rstrip().endswith('"item number 29"\n  ]\n}')


@pytest.mark.parametrize("asks", ["FORCE_COLOR", "TTY_COMPATIBLE"])
def test_a_colour_forcing_environment_leaves_redirected_results_plain(
    run_cli: RunCli, schema_file: Path, asks: str
) -> None:
    """Found by a probe: under ``FORCE_COLOR=1`` (set by CI runners) rich took the pipe for
    a terminal, and ``generate --stream > out.json`` wrote the live display's frames."""
    env = cli_env(**{asks: "1"})
    result = run_cli("generate", "--schema", str(schema_file), "--stream", "A person", env=env)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    jsonschema.validate(json.loads(result.stdout), PERSON_SCHEMA)
    models = run_cli("models", env=env)
    assert models.returncode == 0, models.stderr
    assert "\x1b" not in models.stdout
    assert all(len(line.split("\t")) == 8 for line in models.stdout.splitlines())


@pytest.mark.parametrize("args", text_commands("hi"))
def test_a_lone_surrogate_in_a_reply_is_written_as_its_escape(
    run_cli: RunCli, emulator: LMStudioEmulator, args: list[str]
) -> None:
    r"""Found by a probe: a reply holding ``\ud800`` (LM Studio sends a model's lone half of
    a pair as the character) failed as "unexpected UnicodeEncodeError ... a bug"."""
    emulator.script(TEXT, ["hello \ud800 world"])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello \\ud800 world\n"
    assert result.stderr.count("lone surrogate") == 1
    assert "written as its escape" in result.stderr


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (
            "from pydantic import v1\n\nclass Row(v1.BaseModel):\n    name: str\n",
            "is a Pydantic v1 model (pydantic.v1.BaseModel), which Pydantic 2 cannot write a "
            "JSON schema for or validate with: make it subclass pydantic.BaseModel.",
        ),
        (
            # found by a review: told to write a dataclass, which --type refuses next
            "import attrs\n\n@attrs.define\nclass Row:\n    name: str\n",
            "is an attrs class, which Pydantic cannot read: --type takes a Pydantic model: "
            "write one, or give the JSON schema with --schema (a file, or the schema written out).",
        ),
    ],
    ids=["pydantic-v1", "attrs"],
)
def test_a_type_of_another_library_is_told_what_to_use(
    main_in_process: MainInProcess,
    tmp_path: Path,
    emulator: LMStudioEmulator,
    source: str,
    says: str,
) -> None:
    """Found by a probe: a Pydantic v1 model was "the class V1Person, not a Pydantic model
    class", with no word of v1 nor of what to write instead."""
    module = f"foreign_{len(source)}"  # one module name per case: imports are cached
    (tmp_path / f"{module}.py").write_text(source)
    result = main_in_process("generate", "--type", f"{module}:Row", "-m", TEXT, "hi")
    assert result.returncode == 2
    assert_one_line_error(result, f"--type '{module}:Row' {says}")
    assert emulator.requests == []


def test_pydantic_type_from_the_current_directory(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "people.py").write_text(
        "from pydantic import BaseModel\n\n"
        "class City(BaseModel):\n    name: str\n    population: int\n"
    )
    result = run_cli("generate", "--type", "people:City", "Invent a city")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"name", "population"}


def test_choice(main_in_process: MainInProcess, emulator: LMStudioEmulator) -> None:
    result = main_in_process("generate", "--choice", "positive,negative,neutral", "I love it")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"positive", "negative", "neutral"}
    assert emulator.predictions[0].structured is not None


def test_regex_uses_grammar_mode(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    result = main_in_process("generate", "-m", TEXT, "--regex", "[A-Z]{3}-[0-9]{4}", "A code")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[A-Z]{3}-[0-9]{4}", result.stdout.strip())
    structured = emulator.predictions[0].structured
    assert structured is not None
    assert structured["type"] == "gbnf"


def test_regex_on_an_mlx_model_is_refused(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    result = main_in_process("generate", "-m", MLX, "--regex", "[a-z]+", "A word")
    assert result.returncode == 2
    assert_one_line_error(result, "GGUF", "--regex", "--schema")
    assert "config[" not in result.stderr  # was the library's Python terms
    assert emulator.predictions == []


def test_a_pattern_regex_cannot_hold_either_is_not_told_to_try_regex(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: a schema pattern with \\b was told to use --regex, which refuses it."""
    schema = json.dumps({"type": "string", "pattern": "\\bfoo"})
    result = main_in_process("generate", "-m", TEXT, "--schema", schema, "A word")
    assert result.returncode == 2
    assert_one_line_error(result, "write the pattern without it (--regex cannot hold it either)")
    assert "describe the output with --regex" not in result.stderr
    assert emulator.predictions == []


def test_image_is_downscaled_and_sent(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    big = png(tmp_path / "wide.png", (3000, 1000), "blue")
    small = png(tmp_path / "small.png", (32, 16), "green")
    result = run_cli(
        "generate", "-m", VISION, "--image", str(big), "--image", str(small), "Describe"
    )
    assert result.returncode == 0, result.stderr
    (prediction,) = emulator.predictions
    sizes = [Image.open(io.BytesIO(data)).size for data in prediction.images]
    assert sizes == [(2048, 683), (32, 16)]


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_a_jpeg_is_sent_with_its_own_quantisation(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path, fmt: str
) -> None:
    """Found by a probe: the CLI's decoded copy had no quantisation tables, so every JPEG
    was written again at quality 95 (a second lossy pass, 34% more bytes); and then an MPO
    (a phone's JPEG with previews) still was."""
    photo = tmp_path / "photo.jpg"
    noise = Image.effect_noise((64, 48), 40).convert("RGB")
    more = {"save_all": True, "append_images": [noise.resize((16, 12))]} if fmt == "MPO" else {}
    noise.save(photo, format=fmt, quality=60, subsampling=0, **more)
    result = run_cli("generate", "-m", VISION, "--image", str(photo), "Describe")
    assert result.returncode == 0, result.stderr
    (prediction,) = emulator.predictions
    (sent,) = (Image.open(io.BytesIO(data)) for data in prediction.images)
    from PIL import JpegImagePlugin

    with Image.open(photo) as original:
        assert sent.quantization == original.quantization  # type: ignore[attr-defined]
        assert JpegImagePlugin.get_sampling(sent) == JpegImagePlugin.get_sampling(original) == 0


def test_image_to_a_model_without_vision_is_refused_before_sending(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    image = png(tmp_path / "a.png", (8, 8))
    result = main_in_process("generate", "-m", TEXT, "--image", str(image), "Describe")
    assert result.returncode == 2
    assert_one_line_error(result, TEXT, "vision", "--capability vision")
    assert emulator.predictions == []
    assert emulator.uploads == []


@pytest.mark.parametrize(
    "name", [UNLOADED, UNLOADED.upper(), f"emulator/{UNLOADED}/{UNLOADED}.gguf"]
)
def test_image_to_a_model_without_vision_is_refused_before_loading_it(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path, name: str
) -> None:
    """Found by a probe: a text-only model that was not loaded was loaded (waiting for it,
    and left loaded), then refused. What LM Studio reports of the download decides, for
    each name LM Studio finds it by (a review: its path, its key in another case)."""
    image = png(tmp_path / "a.png", (8, 8))
    result = main_in_process("generate", "-m", name, "--image", str(image), "Describe")
    assert result.returncode == 2
    assert_one_line_error(result, UNLOADED, "vision", "--capability vision")
    assert "getOrLoad" not in [r.endpoint for r in emulator.requests]
    assert emulator.predictions == []


def test_image_to_a_variant_not_loaded_is_refused_before_loading_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by mutation testing: nothing held a model named without its ``@variant`` (as
    LM Studio finds it) to be judged before loading; it was loaded, then refused."""
    from outlines_lmstudio.cli import main

    monkeypatch.delenv("LMSTUDIO_HOST", raising=False)
    image = png(tmp_path / "a.png", (8, 8))
    models = [EmulatedModel("qwen/qwen3-4b@q4_k_m", loaded=False), EmulatedModel("loaded")]
    with LMStudioEmulator(models) as emulator:
        capsys.readouterr()
        args = ["generate", "-m", "Qwen/Qwen3-4B", "--image", str(image), "Describe"]
        code = main(["--host", emulator.api_host, *args])
        endpoints = [r.endpoint for r in emulator.requests]
    err = capsys.readouterr().err
    assert code == 2, err
    assert "vision" in err
    assert "getOrLoad" not in endpoints


def test_regex_to_a_gguf_model_not_loaded_loads_it(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """The check made before loading lets a model it accepts be loaded and used."""
    result = main_in_process("generate", "-m", UNLOADED, "--regex", "[a-z]{4}", "A word")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch("[a-z]{4}", result.stdout.strip())
    loads = [r.parameter for r in emulator.requests if r.endpoint == "getOrLoad"]
    assert {load["identifier"] for load in loads} == {UNLOADED}  # the library's own finds it
    structured = emulator.predictions[0].structured
    assert structured is not None
    assert structured["type"] == "gbnf"


def _fed(fifo: Path, data: bytes) -> threading.Thread:
    """Write ``data`` into the named pipe ``fifo`` from a thread (its reader may stop early)."""

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as pipe:
            pipe.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_an_image_from_a_pipe_is_sent(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """``--image <(...)`` and a named pipe are read: the command waits for its writer."""
    os.mkfifo(tmp_path / "fifo")
    png(tmp_path / "a.png", (20, 10))
    writer = _fed(tmp_path / "fifo", (tmp_path / "a.png").read_bytes())
    result = main_in_process("generate", "-m", VISION, "--image", "fifo", "Describe")
    writer.join(10)
    assert result.returncode == 0, result.stderr
    (prediction,) = emulator.predictions
    assert [Image.open(io.BytesIO(data)).size for data in prediction.images] == [(20, 10)]


def test_a_pipe_that_gives_too_much_is_refused_not_read_for_ever(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a probe: a pipe fed for ever was read into memory until it ran out, and the
    MemoryError was reported as a bug of the command."""
    from outlines_lmstudio.cli import _images

    monkeypatch.setattr(_images, "_PIPE_LIMIT", 4096)
    os.mkfifo(tmp_path / "fifo")
    writer = _fed(tmp_path / "fifo", b"\x89PNG" + bytes(8192))
    result = main_in_process("generate", "-m", VISION, "--image", "fifo", "Describe")
    writer.join(10)
    assert result.returncode == 2
    assert_one_line_error(result, "'fifo': it gave more than", "Save the image to a file")
    assert emulator.predictions == []


def test_a_device_is_read_as_a_file_not_as_a_pipe(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by a review: ``/dev/zero`` was read 256 MiB deep as a pipe, then said to be too
    large; Pillow reads its header, as a file's."""
    result = main_in_process("generate", "-m", VISION, "--image", "/dev/zero", "Describe")
    assert result.returncode == 2
    assert_one_line_error(result, "'/dev/zero'", "not an image file")
    assert emulator.predictions == []


def test_unreadable_image(run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path) -> None:
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    result = run_cli("generate", "-m", VISION, "--image", str(tmp_path / "text.png"), "Hi")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result, "text.png", "not an image file")
    assert emulator.predictions == []


def test_a_corrupt_image_is_named_as_such_not_as_a_bug(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    broken_png(tmp_path / "broken.png")
    result = run_cli("generate", "-m", VISION, "--image", str(tmp_path / "broken.png"), "Hi")
    assert result.returncode == 2
    assert_one_line_error(result, "broken.png", "corrupt or truncated", "broken PNG file")
    assert "bug" not in result.stderr
    assert emulator.predictions == []


def test_an_animated_image_is_refused_not_cut_to_its_first_frame(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """The library refuses animations; the CLI's decoded copy had one frame, so it was sent."""
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    result = main_in_process("generate", "-m", VISION, "--image", "anim.gif", "Describe")
    assert result.returncode == 2
    assert_one_line_error(result, "anim.gif", "animated (3 frames)")
    assert emulator.uploads == []
    assert emulator.predictions == []


def test_a_webp_photo_is_sent_as_its_file(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """A lossy WebP was written again losslessly, several times its file (found by a
    review of the library's fix, which the command's copy of the image did not reach)."""
    Image.effect_noise((64, 48), 40).convert("RGB").save(tmp_path / "photo.webp", quality=60)
    result = main_in_process("generate", "-m", VISION, "--image", "photo.webp", "Hi")
    assert result.returncode == 0, result.stderr
    assert emulator.uploads[-1].data == (tmp_path / "photo.webp").read_bytes()


def test_an_eps_image_without_ghostscript_says_what_to_do(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Found by a probe: only Pillow's "Unable to locate Ghostscript on paths", where the
    library says to install it or convert the image."""
    from PIL import EpsImagePlugin

    Image.new("RGB", (8, 6), "red").save(tmp_path / "figure.eps")  # Pillow writes EPS itself
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", False)  # as on a machine without gs
    monkeypatch.chdir(tmp_path)
    result = main_in_process("generate", "-m", VISION, "--image", "figure.eps", "Hi")
    assert result.returncode == 2
    assert_one_line_error(result, "'figure.eps'", "through Ghostscript", "convert the image to PNG")
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.png", None, "no such file"),
        ("truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "Cannot read image"),
        ("folder.png", "dir", "is a directory"),
        # Found by a probe: Python's raw "[Errno 20] Not a directory: 'notes.txt/a.png'".
        ("notes.txt/a.png", "under a file", "'notes.txt/a.png': Not a directory."),
    ],
)
def test_other_unreadable_images(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    tmp_path: Path,
    name: str,
    content: bytes | str | None,
    needle: str,
) -> None:
    if content == "dir":
        (tmp_path / name).mkdir()
    elif content == "under a file":
        (tmp_path / name).parent.write_text("notes")
    elif isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    result = main_in_process("generate", "-m", VISION, "--image", name, "Hi")
    assert result.returncode == 2
    assert_one_line_error(result, name, needle)
    assert emulator.predictions == []


def test_bad_schema_file(run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"type": "object",\n "properties": }')
    result = run_cli("generate", "--schema", "broken.json", "Anything")
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result, "broken.json", "is not valid JSON (line 2, column 16")
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("args", "content", "needle"),
    [
        (["--schema", "missing.json"], None, "'missing.json': no such file"),
        (["--schema", "."], None, "'.': it is a directory."),  # was "[Errno 21] ...: '.'"
        (["--schema", "s.json"], "[1, 2]", "holds a JSON list, not a JSON schema object"),
        # the library's pointer and words (found by a probe: "at type", and jsonschema's
        # "not valid under any of the given schemas")
        (["--schema", "s.json"], '{"type": 12}', "at /type: 12 is no JSON Schema type: write"),
        (["--schema", "s.json"], '{"type": "strin"}', "at /type: 'strin' is no JSON Schema"),
        # found by a review: "unexpected TypeError: unhashable type: 'list'"
        (["--schema", "s.json"], '{"$schema": ["x"]}', "at /$schema: it must be a string"),
        # A schema given on the command line: named so, as a file's name is.
        (["--schema", '{"type": "strin"}'], None, "The --schema JSON is not a valid JSON schema"),
        (["--schema", '{"type": '], None, "The --schema JSON is not valid JSON (line 1, column"),
        (["--schema", '{"a": 1, "a": 2}'], None, "The --schema JSON has the key 'a' twice"),
        (
            ["--schema", '{"a": ' * 3000 + "1" + "}" * 3000],
            None,
            "The --schema JSON is nested too deeply",
        ),
        (["--type", "no_such_module:Thing"], None, "cannot import 'no_such_module'"),
        (["--type", "json:dumps"], None, "is an object of type function, not a Pydantic"),
        (["--type", "json:JSONDecoder"], None, "is the class JSONDecoder, not a Pydantic model"),
        (["--type", "json"], None, "must be MODULE:CLASS"),
        (["--type", "people.py:City"], None, "not a file path: run --type people:City."),
        (["--type", "app/people.py:City"], None, "run --type people:City from 'app' (or add it"),
        # Found by a probe: "TypeError: the 'package' argument is required to perform a
        # relative import" (tab completion writes ./people.py).
        (["--type", "./people.py:City"], None, "not a file path: run --type people:City."),
        (["--type", ".people:City"], None, "not a relative one: run --type people:City from"),
        (["--type", ".:City"], None, "--type '.:City' must be MODULE:CLASS"),
        (["--choice", "a,,b"], None, "distinct, non-empty"),
        (["--regex", "(unclosed"], None, "not a valid regular expression"),
        (["--regex", ""], None, "--regex is empty"),  # printed an empty line (session 26)
        # Both were "unexpected OverflowError/RecursionError ... a bug", status 1:
        (["--regex", "a{99999999999999999999}"], None, "repetition number is too large"),
        (["--regex", "(" * 1200 + "a" + ")" * 1200], None, "nests its groups too deeply"),
        (["--retries", "-1", "--schema", "s.json"], "{}", "--retries must be 0 or more"),
        # Accepted: a reply that never validates was asked for again without end.
        (["--retries", "9" * 30, "--schema", "s.json"], "{}", "--retries must be at most 10"),
        (["--temperature", "-1"], None, "--temperature must be a finite number, 0 or more"),
        # Found by a probe: the first "properties" was dropped, NaN read as a number.
        (["--schema", "s.json"], '{"properties": {}, "properties": {}}', "key 'properties' twice"),
        (["--schema", "s.json"], '{"maximum": NaN}', "holds NaN, which is not JSON"),
        # Found by a probe: three FutureWarnings with our paths, then a reply "p]]]".
        (["--regex", "[[:alpha:]]+"], None, "is ambiguous: Possible nested set"),
        # Found by a probe: accepted, and did nothing (the reply is text).
        (["--retries", "2"], None, "--retries re-asks when a structured reply does not"),
    ],
)
def test_bad_output_options(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    tmp_path: Path,
    args: list[str],
    content: str | None,
    needle: str,
) -> None:
    if content is not None:
        (tmp_path / "s.json").write_text(content)
    result = main_in_process("generate", *args, "Anything")
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert emulator.predictions == []


@pytest.mark.parametrize(
    "args",
    [
        ["--schema", "not.json"],
        ["--schema", "loop.json"],
        ["--regex", "(a)\\1"],
        ["--regex", "(?=a)a"],
    ],
)
def test_the_output_type_is_checked_before_connecting(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path, args: list[str]
) -> None:
    """Found by a probe: checked after connecting and loading the model (with LM Studio
    down: "not reachable", status 3; with a model not loaded: loaded, then refused)."""
    (tmp_path / "not.json").write_text(json.dumps({"type": "string", "not": {"const": "x"}}))
    (tmp_path / "loop.json").write_text(json.dumps({"$ref": "#"}))
    result = main_in_process("generate", "-m", "gemma-3-1b-it", *args, "Hi")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result)
    assert emulator.requests == []


def test_unknown_model(run_cli: RunCli, emulator: LMStudioEmulator) -> None:
    result = run_cli("generate", "-m", "no-such-model", "Hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result, "no model 'no-such-model'", "outlines-lmstudio models")


def test_reply_that_does_not_validate_fails(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path
) -> None:
    emulator.script(TEXT, ['{"name": "Ann"}', '{"name": "Ann"}'])
    result = main_in_process(
        "generate", "-m", TEXT, "--schema", str(schema_file), "--retries", "1", "P"
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result, "age", "Raw reply")
    assert len(emulator.predictions) == 2  # asked, then re-asked once


def test_server_failure(main_in_process: MainInProcess, emulator: LMStudioEmulator) -> None:
    emulator.add_fault(Fault("predict", "error", message="GPU on fire"))
    result = main_in_process("generate", "-m", TEXT, "Hi")
    assert result.returncode == 1
    assert_one_line_error(result, "GPU on fire")


def test_hints_are_said_as_options(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """The library's hints name Python arguments; the command line names its options."""
    (tmp_path / "not.json").write_text(json.dumps({"type": "string", "not": {"const": "x"}}))
    refused = main_in_process("generate", "-m", TEXT, "--schema", "not.json", "Hi")
    assert refused.returncode == 2
    assert_one_line_error(refused, "'not'", "--regex")
    assert "from_lmstudio" not in refused.stderr
    assert emulator.predictions == []

    emulator.script(TEXT, ['{"name": "Ada", "age": 3'])
    (tmp_path / "person.json").write_text(json.dumps(PERSON_SCHEMA))
    cut = main_in_process(
        "generate", "-m", TEXT, "--schema", "person.json", "--max-tokens", "3", "Who?"
    )
    assert cut.returncode == 1
    assert_one_line_error(cut, "raise --max-tokens")


def test_prompt_from_stdin(
    main_in_process: MainInProcess,
    emulator: LMStudioEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Piped prompt\n"))
    result = main_in_process("generate", "-m", TEXT, "-")
    assert result.returncode == 0, result.stderr
    assert "Piped prompt" in json.dumps(emulator.predictions[0].messages)
    monkeypatch.setattr(sys, "stdin", io.StringIO("  \n"))
    blank = main_in_process("generate", "-m", TEXT, "-")
    assert blank.returncode == 2
    # It was told to pipe the prompt in, as it was (found by a probe).
    assert_one_line_error(blank, "The prompt piped in (PROMPT -) is only whitespace")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    empty = main_in_process("generate", "-m", TEXT, "-")
    assert_one_line_error(empty, "The prompt piped in (PROMPT -) is empty: pipe some text in.")
    assert main_in_process("generate", "-m", TEXT, " ").returncode == 2


def test_a_prompt_piped_with_windows_line_ends_is_sent_with_newlines(
    run_cli: RunCli, emulator: LMStudioEmulator
) -> None:
    r"""Found by mutation testing: nothing checked that standard input's ``\r\n`` and ``\r``
    become ``\n`` (a file saved on Windows was sent with its carriage returns)."""
    result = run_cli("generate", "-m", TEXT, "-", stdin="line one\r\nline two\rline three\r\n")
    assert result.returncode == 0, result.stderr
    (prediction,) = emulator.predictions
    assert roles_and_texts(prediction.messages) == [("user", "line one\nline two\nline three\n")]


@pytest.mark.parametrize("stream", [False, True])
def test_retries_re_ask_with_the_errors_streamed_or_not(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, schema_file: Path, stream: bool
) -> None:
    # With --stream, --retries (default 1) was ignored: one attempt, then status 1.
    emulator.script(TEXT, ['{"name": "Ann"}', '{"name": "Bo", "age": 3}'])
    more = ["--stream"] if stream else []
    args = ["generate", "-m", TEXT, "--system", "Be exact", "--schema", str(schema_file)]
    result = main_in_process(*args, *more, "Who?")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Bo", "age": 3}
    first, second = emulator.predictions
    asked = roles_and_texts(second.messages)
    assert asked[:3] == [*roles_and_texts(first.messages), ("assistant", '{"name": "Ann"}')]
    assert asked[3][0] == "user"
    assert "Your previous answer is invalid" in asked[3][1]
    assert "age" in asked[3][1]

    emulator.reset()
    emulator.script(TEXT, ['{"name": "Ann"}'] * 3)
    failed = main_in_process(*args, *more, "--retries", "2", "Who?")
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert_one_line_error(failed, "after 3 attempt(s)", "Raw reply")
    assert len(emulator.predictions) == 3


@pytest.mark.parametrize("levels", [150, 5000], ids=["checked too deep", "read too deep"])
def test_a_schema_file_nested_too_deeply_is_a_usage_error(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path, levels: int
) -> None:
    # It was "unexpected RecursionError ... a bug", status 1: from json.loads, or from
    # jsonschema's meta-schema check, before the library could refuse it in its own words.
    nested = '{"type": "object", "properties": {"a": ' * levels + "{}" + "}}" * levels
    (tmp_path / "deep.json").write_text(nested)
    for command in (["generate", "Anything"], ["extract", "--input", "-", "--output", "-"]):
        result = run_cli(*command, "--schema", "deep.json", stdin='{"id": 1, "prompt": "a"}\n')
        assert result.returncode == 2, result.stderr
        assert_one_line_error(result, "deep.json", "nested too deeply", "levels")
        assert "RecursionError" not in result.stderr
    assert emulator.predictions == []


def test_a_schema_file_with_an_integer_python_cannot_read_is_a_usage_error(
    run_cli: RunCli, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: "unexpected ValueError: Exceeds the limit (4300 digits) ... a bug"."""
    (tmp_path / "big.json").write_text('{"type": "integer", "maximum": ' + "9" * 5000 + "}")
    result = run_cli("generate", "--schema", "big.json", "Anything")
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "Schema file 'big.json' has an integer of more than 4300 digits")
    assert emulator.predictions == []


def test_a_reply_with_a_lone_surrogate_escape_is_refused_not_a_crash(
    run_cli: RunCli, emulator: LMStudioEmulator, schema_file: Path
) -> None:
    # A model may write half of a surrogate pair as an escape ("\ud83d"): JSON text whose
    # value is not Unicode text. It was "unexpected UnicodeEncodeError ... a bug", status 1,
    # then printed; it does not validate now (as Pydantic has it), and the error says why.
    emulator.script(TEXT, ['{"name": "smile \\ud83d", "age": 3}'])
    result = run_cli("generate", "-m", TEXT, "--schema", str(schema_file), "--retries", "0", "Who?")
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result, "lone surrogate")
    assert "unexpected" not in result.stderr


def test_an_image_whose_values_cannot_be_sent_is_named(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """Found by a probe: the library's refusal of a 32-bit grey TIFF did not say which of
    the --image files it was, and advised Python (image.point) to a command-line user."""
    png(tmp_path / "a.png", (8, 8))
    Image.new("I", (30, 20), 100000).save(tmp_path / "counts.tiff")
    result = main_in_process(
        "generate", "-m", VISION, "--image", "a.png", "--image", "counts.tiff", "Describe"
    )
    assert result.returncode == 2
    assert_one_line_error(
        result, "Cannot use image 'counts.tiff'", "values from 100000 to 100000", "8-bit PNG"
    )
    assert "image.point" not in result.stderr
    assert emulator.uploads == []
    assert emulator.predictions == []


def test_a_multi_page_tiff_is_called_as_the_library_calls_it(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    pages = [Image.new("L", (5, 7), value) for value in (255, 200)]
    pages[0].save(tmp_path / "scan.tiff", save_all=True, append_images=pages[1:])
    result = main_in_process("generate", "-m", VISION, "--image", "scan.tiff", "Describe")
    assert result.returncode == 2
    assert_one_line_error(result, "'scan.tiff' is a TIFF of 2 pages", "Save the page you want")
    assert "animated" not in result.stderr


def test_an_mpo_phone_photo_is_a_still(
    main_in_process: MainInProcess, emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """The CLI counted the previews of an MPO file (what many phone cameras write) as
    frames and refused it as "animated (2 frames)"; the library sends it as a still."""
    primary, preview = Image.new("RGB", (20, 20), "red"), Image.new("RGB", (4, 4), "blue")
    primary.save(tmp_path / "photo.mpo", format="MPO", save_all=True, append_images=[preview])
    result = main_in_process("generate", "-m", VISION, "--image", "photo.mpo", "Describe")
    assert result.returncode == 0, result.stderr
    assert [Image.open(io.BytesIO(b)).size for b in emulator.predictions[0].images] == [(20, 20)]


def test_a_schema_pattern_python_warns_of_is_taken_quietly(run_cli: RunCli, tmp_path: Path) -> None:
    """``[[:alpha:]]`` in a schema file is ECMA-262 (the characters), yet Python's ``re``
    printed "FutureWarning: Possible nested set", and with warnings as errors the command
    called itself a bug, status 1 (found by a probe)."""
    path = tmp_path / "word.schema.json"
    schema = {
        "type": "object",
        "properties": {"word": {"type": "string", "pattern": "^[[:alpha:]]+$"}},
    }
    path.write_text(json.dumps({**schema, "required": ["word"]}))
    result = run_cli(
        "generate", "A word", "-m", TEXT, "--schema", str(path), env=cli_env(PYTHONWARNINGS="error")
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr
    assert set(json.loads(result.stdout)) == {"word"}


@pytest.mark.parametrize("stream", [False, True])
def test_escape_sequences_in_a_reply_are_escaped_on_a_terminal_only(
    emulator: LMStudioEmulator, stream: bool
) -> None:
    """Piped, the text stays as the model wrote it; on a terminal its escape sequences
    would act on the terminal (found by a probe of chat: the window title, a cleared
    screen)."""
    import pexpect

    reply = "Hi \x1b]0;PWNED\x07 and \x1b[2J\tcleared"
    emulator.script(TEXT, [reply] * 2)
    command = [*script_path(), "--host", emulator.api_host, "generate", "-m", TEXT]
    command += ["--stream", "hi"] if stream else ["hi"]
    piped = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), timeout=30, check=False
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == reply + "\n"
    child = pexpect.spawn(command[0], command[1:], env=cli_env(), encoding="utf-8", timeout=15)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert (child.before or "").replace("\r\n", "\n") == (
        r"Hi \x1b]0;PWNED\x07 and \x1b[2J" + "\tcleared\n"
    )


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a\x1b[2J\x1b]0;PWNED\x07": {"type": "nope"}}},
        {"type": "object", "properties": {"a\x1b[2J\x9b": {"minLength": 5, "maxLength": 1}}},
    ],
)
def test_a_name_inside_the_schema_is_escaped_in_the_error(
    main_in_process: MainInProcess, tmp_path: Path, schema: dict[str, Any]
) -> None:
    """Found by a probe: the error named the schema's node by its JSON pointer raw, so a
    property name's escape sequence cleared the screen and set the window title."""
    (tmp_path / "s.json").write_text(json.dumps(schema))
    result = main_in_process("generate", "-m", TEXT, "--schema", "s.json", "hi")
    assert result.returncode == 2
    assert "/properties/a\\x1b[2J" in result.stderr, result.stderr
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", result.stderr), repr(result.stderr)


def test_a_json_reply_shows_del_and_8_bit_controls_escaped_on_a_terminal(
    emulator: LMStudioEmulator, tmp_path: Path
) -> None:
    """JSON writes ESC as \\u001b but DEL and U+009B (a CSI to some terminals) as they are:
    they reached the terminal, and my first fix wrote Python's escapes, which are not JSON
    (found by reviews)."""
    import pexpect

    emulator.script(TEXT, ['{"name": "a\\u009b2Jb\\u007fc"}'])
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    command = [*script_path(), "--host", emulator.api_host, "generate", "-m", TEXT]
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(schema))
    command += ["--schema", str(schema_file), "hi"]
    child = pexpect.spawn(command[0], command[1:], env=cli_env(), encoding="utf-8", timeout=15)
    child.expect(pexpect.EOF)
    child.close()
    shown = child.before or ""
    assert child.exitstatus == 0, shown
    assert "\x9b" not in shown
    assert "\x7f" not in shown
    assert r"a\u009b2Jb\u007fc" in shown  # JSON's own escapes: the text stays JSON
    assert json.loads(shown.replace("\r\n", "\n")) == {"name": "a\x9b2Jb\x7fc"}


def test_a_line_break_split_across_fragments_stays_a_line_break_on_a_terminal() -> None:
    """Gemma's tokenizer writes "\\r\\n" as two tokens: the "\\r" ended a fragment and
    was shown as a literal backslash-r (found by a review); a lone one still is."""
    import pexpect

    fragments = ["line", " one", "\r", "", "\n", "two\r", "over", "\n"]  # "" holds on
    code = (
        "from outlines_lmstudio.cli._common import write_out\n"
        f"for fragment in {fragments!r}:\n    write_out(fragment)\n"
    )
    child = pexpect.spawn(sys.executable, ["-c", code], encoding="utf-8", timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert child.before == "line one\r\r\ntwo\\rover\r\n"  # the tty writes \n as \r\n


def test_a_stall_past_the_sdk_s_own_limit_in_a_shown_stream_is_said(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: after a Ctrl-Z of 70 s, "LM Studio sent nothing for 60 s", though it
    had sent the whole reply. Text was shown, so the request is not asked again."""
    emulator.script(TEXT, ["w0 w1 w2 w3 w4 w5"])
    with StallPastTheSdkLimit(emulator) as stall:
        result = main_in_process("generate", "-m", TEXT, "--stream", "Count")
    assert stall.held > 2.3
    assert result.returncode == 1
    assert result.stdout.startswith("w0 w1")
    assert_one_line_error(
        result,
        "The command was stopped or stalled (Ctrl-Z) for at least",
        "past the 1 s it waits for each message from LM Studio",
        "Run the command again",
    )
    emulator.wait_until(lambda: emulator.predictions[0].done)
    # The cancel came (the command may exit before LM Studio ends the reply on it).
    assert emulator.predictions[0].cancelled


def test_a_stall_past_the_sdk_s_own_limit_in_the_model_lookup_is_asked_again(
    main_in_process: MainInProcess, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: a Ctrl-Z of 70 s during `chat -m`'s model load ended the command
    with "LM Studio sent nothing for 60 s" (every command looks its model up so)."""
    emulator.script(TEXT, ["fine"])
    with StallPastTheSdkLimit(emulator, "getOrLoad") as stall:
        result = main_in_process("generate", "-m", TEXT, "Count")
    assert stall.held > 2.3
    assert result.returncode == 0, result.stderr
    assert result.stdout == "fine\n"
    assert sum(r.endpoint == "getOrLoad" for r in emulator.requests) >= 2  # asked again


@pytest.mark.usefixtures("sigint_default")
def test_a_closed_terminal_stops_a_streamed_reply_on_the_server(
    emulator: LMStudioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--stream`` to a terminal that closed (an SSH session dropped): the kernel sends
    SIGHUP, and the next fragment can no longer be written (EIO). The process ended at
    once, status -1, and the prediction went on on the server."""
    monkeypatch.setattr(emulator, "token_latency", 0.002)
    emulator.script(TEXT, ["word " * 2000])
    child = spawn_on_a_terminal(emulator.api_host, "generate", "--stream", "-m", TEXT, "Go on")
    try:
        child.expect("word word word")
        assert hang_up(child) == (129, None)
    finally:
        child.close(force=True)
    emulator.wait_until(lambda: emulator.predictions[0].done, timeout=5)
    assert emulator.predictions[0].cancelled
    assert len(emulator.predictions[0].fragments) < 2000
