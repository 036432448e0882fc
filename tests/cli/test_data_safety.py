"""Issue 13 through the real console script: no user file destroyed, no traceback, ever.

``extract`` writes only to a new file, a stream, or its own earlier output (compared by
device and inode, never by name); ``chat`` keeps the session whatever a command does;
every failure is one line with the documented exit status.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from outlines_lmstudio.cli import _sigterm
from outlines_lmstudio.cli._common import CliError, failure_report
from outlines_lmstudio.cli._jsonl import scan_output
from outlines_lmstudio.errors import InvalidImageError, LMStudioConnectionError
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import MainInProcess, RunCli
from .helpers import PERSON_SCHEMA, TEXT, assert_one_line_error, cli_env, lines, script_path

pytestmark = pytest.mark.timeout(40)

ITEMS = (
    '{"id": "a", "prompt": "Person one"}\n'
    '{"id": "b", "prompt": "Person two"}\n'
    '{"id": "c", "prompt": "Person three"}'  # no final newline: the line a bug would cut
)


RESULT_AND_ERROR = (
    json.dumps({"id": "a", "result": {"name": "Ann", "age": 3}})
    + "\n"
    + json.dumps({"id": "b", "error": {"type": "ParseError", "message": "x"}})
    + "\n"
)
"""An earlier output of extract: one result, one error."""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(PERSON_SCHEMA))
    source = tmp_path / "items.jsonl"
    source.write_text(ITEMS)
    return schema, source


def extract(schema: Path, source: Path, target: str, *more: str) -> list[str]:
    return ["extract", "--schema", str(schema), "--input", str(source), "--output", target, *more]


# -- extract: never open a file that is not ours ------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"keep":1}',  # one line, no newline: used to be "a partial line" and emptied
        '{"keep":1}\n',
        "notes about my project\n",
        '{"id": 1, "result": 2}\nnot json\n',
        '{"id": 1}\n',  # an id but neither result nor error
        '{"id": 1, "result": 2, "error": {}}\n',  # both
        "\x00\x01binary",
        '{"id": 1, "result": 2}\nmy important notes',  # notes after results, no newline
        # Found by a probe: whole JSON that starts like a record (json.dump writes no
        # newline) was taken for a record cut mid-write, and cut off: the file emptied.
        '{"id": 7, "settings": {"a": 1}}',
        '{"id": 1, "result": 2}\n{"id": "note", "comment": "keep me"}',
    ],
)
def test_existing_file_that_is_not_ours_is_refused_untouched(
    run_cli: RunCli,
    files: tuple[Path, Path],
    tmp_path: Path,
    emulator: LMStudioEmulator,
    content: str,
) -> None:
    schema, source = files
    target = tmp_path / "c.json"
    target.write_text(content)
    result = run_cli(*extract(schema, source, "c.json"))
    assert result.returncode == 2
    assert_one_line_error(result, "c.json", "right --output file", "left untouched")
    assert target.read_text() == content
    assert source.read_text() == ITEMS
    assert emulator.requests == []


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_link_to_the_input_is_refused(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path, link: str
) -> None:
    schema, source = files
    target = tmp_path / "results.jsonl"
    (os.link if link == "hard" else os.symlink)(source, target)
    result = run_cli(*extract(schema, source, "results.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, "is the input file", "same file on disk")
    assert source.read_text() == ITEMS  # the last line is still there


def test_dangling_symlink_as_output_is_refused_with_the_reason(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    schema, source = files
    (tmp_path / "results.jsonl").symlink_to("missing/target.jsonl")
    result = run_cli(*extract(schema, source, "results.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, "is a symbolic link to 'missing/target.jsonl', which does not")
    assert not (tmp_path / "missing").exists()
    assert emulator.requests == []


def test_stdout_is_a_stream_never_read(run_cli: RunCli, files: tuple[Path, Path]) -> None:
    schema, source = files
    for target in ("/dev/stdout", "-"):
        result = run_cli(*extract(schema, source, target))
        assert result.returncode == 0, result.stderr
        records = [json.loads(line) for line in result.stdout.splitlines()]
        assert sorted(r["id"] for r in records) == ["a", "b", "c"]
        assert "Skipping" not in result.stderr


def test_stdout_redirected_to_the_input_is_refused(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, source = files
    with source.open("a") as handle:
        result = subprocess.run(
            [*script_path(), "--emulator", *extract(schema, source, "/dev/stdout")],
            stdout=handle,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert_one_line_error(result, "is the input file")
    assert source.read_text() == ITEMS


def test_retry_errors_on_a_stream_is_refused(run_cli: RunCli, files: tuple[Path, Path]) -> None:
    schema, source = files
    result = run_cli(*extract(schema, source, "/dev/stdout", "--retry-errors"))
    assert result.returncode == 2
    assert_one_line_error(result, "--retry-errors needs an output file", "stream")


def test_directory_as_output_is_one_line(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, source = files
    (tmp_path / "outdir").mkdir()
    result = run_cli(*extract(schema, source, "outdir"))
    assert result.returncode == 2
    assert_one_line_error(result, "Cannot write output 'outdir'", "Is a directory")


@pytest.mark.parametrize("left", ["file", "folder"])
def test_retry_errors_is_not_blocked_by_a_temporary_file_left_behind(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path, left: str
) -> None:
    """A run killed while rewriting leaves its temporary file; later runs still rewrite.

    (A rewrite that fails is in `test_read_only_output_and_folder_are_one_line`.)
    """
    schema, source = files
    target = tmp_path / "out.jsonl"
    target.write_text(RESULT_AND_ERROR)
    stale = tmp_path / ".out.jsonl.tmp"  # the name the rewrite used to take every time
    if left == "file":
        stale.write_text(RESULT_AND_ERROR[:20])
    else:
        stale.mkdir()
    result = run_cli(*extract(schema, source, "out.jsonl", "--retry-errors"))
    assert result.returncode == 0, result.stderr
    records = lines(target)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    assert all("result" in r for r in records)
    assert stale.exists()  # not this run's: left alone


@pytest.fixture
def sigterm_as_the_command_has_it() -> Iterator[None]:
    """SIGTERM and SIGHUP handled as the ``outlines-lmstudio`` command handles them; put back
    after."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, *_sigterm.STOPS)}
    for signum in _sigterm.STOPS:
        signal.signal(signum, signal.SIG_DFL)
    _sigterm.install()
    try:
        yield
    finally:
        # Ctrl-C's too: a command that ends makes both only noted (`_sigterm.hold`).
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _sigterm._State.received = None
        _sigterm._State.installed = _sigterm._State.again = False


def test_an_ignored_sighup_stays_ignored() -> None:
    """Under ``nohup`` a command outlives its terminal: SIGHUP stays ignored (a guard test:
    the command left SIGHUP alone before it was handled as Ctrl-C)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, *_sigterm.STOPS)}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _sigterm.install()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is _sigterm._on_sigterm
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _sigterm._State.installed = False


def _ctrl_c(fd: int) -> None:
    raise KeyboardInterrupt


def _sigterm_sent(fd: int) -> None:
    signal.raise_signal(signal.SIGTERM)


@pytest.mark.usefixtures("sigint_default", "sigterm_as_the_command_has_it")
@pytest.mark.parametrize(
    ("stop", "status", "said"),
    [(_ctrl_c, 130, "interrupted."), (_sigterm_sent, 143, "terminated (SIGTERM).")],
    ids=["ctrl-c", "sigterm"],
)
def test_stopped_during_the_retry_errors_rewrite_leaves_no_temporary_file(
    main_in_process: MainInProcess,
    files: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop: Callable[[int], None],
    status: int,
    said: str,
) -> None:
    # Ctrl-C was handled here already; SIGTERM ended the process, leaving .out.jsonl.XXXX.tmp.
    schema, source = files
    target = tmp_path / "out.jsonl"
    target.write_text(RESULT_AND_ERROR)
    monkeypatch.setattr(os, "fsync", stop)  # stopped while the new file is written
    result = main_in_process(*extract(schema, source, "out.jsonl", "--retry-errors"))
    assert result.returncode == status
    assert result.stderr.splitlines()[-1] == f"outlines-lmstudio: error: {said}"
    assert target.read_text() == RESULT_AND_ERROR
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "items.jsonl",
        "out.jsonl",
        "person.schema.json",
    ]


def test_retry_errors_through_a_link_rewrites_its_target_and_keeps_the_link(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, source = files
    (tmp_path / "data").mkdir()
    target = tmp_path / "data" / "out.jsonl"
    target.write_text(RESULT_AND_ERROR)
    (tmp_path / "out.jsonl").symlink_to("data/out.jsonl")
    result = run_cli(*extract(schema, source, "out.jsonl", "--retry-errors"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.jsonl").is_symlink()  # not replaced by a file of its own
    records = lines(target)
    assert sorted(r["id"] for r in records) == ["a", "b", "c"]
    assert all("result" in r for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data",
        "items.jsonl",
        "out.jsonl",
        "person.schema.json",
    ]


def run_read_only(
    folder: Path, emulator: LMStudioEmulator, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``folder`` read-only: a read-only bind mount in a private mount
    namespace as root (root ignores file modes), file modes otherwise."""
    command = [*script_path(), "--host", emulator.api_host, *args]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("root ignores file modes, and unshare is not available")
        mount = f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(folder))}"
        command = ["unshare", "-m", "sh", "-c", f'{mount} && exec "$@"', "sh", *command]
    else:
        for path in folder.iterdir():
            path.chmod(0o444)
        folder.chmod(0o555)
    try:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=folder.parent,
            timeout=30,
            check=False,
        )
    finally:
        folder.chmod(0o755)


def test_read_only_output_and_folder_are_one_line(
    emulator: LMStudioEmulator, files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, source = files
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "out.jsonl"
    content = RESULT_AND_ERROR
    target.write_text(content)
    retry = run_read_only(folder, emulator, *extract(schema, source, str(target), "--retry-errors"))
    assert retry.returncode == 2
    assert_one_line_error(retry, "the file is not writable for this user")
    plain = run_read_only(folder, emulator, *extract(schema, source, str(target)))
    assert plain.returncode == 2
    assert_one_line_error(
        plain, f"Cannot write output {str(target)!r}: the file is not writable for this user"
    )
    new = run_read_only(folder, emulator, *extract(schema, source, str(folder / "new.jsonl")))
    assert new.returncode == 2
    assert_one_line_error(new, f"no file can be made in its folder {str(folder)!r}")
    partial = folder / "partial.jsonl"
    partial.write_text(content + '{"id": "c", "re')
    cut = run_read_only(folder, emulator, *extract(schema, source, str(partial)))
    assert cut.returncode == 2
    assert_one_line_error(cut, "Cannot repair output")
    assert target.read_text() == content
    # Found by a probe: said once the model was looked up (and, with --local, loaded).
    assert emulator.requests == []


def run_without_privileges(
    emulator: LMStudioEmulator, cwd: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as this user without root's privileges (file modes then apply to root
    too: ``setpriv`` drops every capability), as a user other than root runs it."""
    command = [*script_path(), "--host", emulator.api_host, *args]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores file modes, and setpriv is not available")
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *command]
    return subprocess.run(
        command, capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=30, check=False
    )


def test_retrying_errors_needs_the_file_and_the_folder_it_is_rewritten_in(
    emulator: LMStudioEmulator, files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Found by a review of the check made before LM Studio is asked: ``--retry-errors``
    rewrites the file a symbolic link points to, next to it, with the file's mode, then
    appends. A link in a read-only folder was refused (its own folder was checked); a link
    into a read-only folder passed, and failed after the model was looked up; a read-only
    file passed, and its error lines were gone (the new file had its mode)."""
    schema, source = files
    (tmp_path / "closed").mkdir()
    (tmp_path / "open").mkdir()
    read_only_file = tmp_path / "open" / "read-only.jsonl"
    read_only_file.write_text(RESULT_AND_ERROR)
    read_only_file.chmod(0o444)
    into_closed = tmp_path / "open" / "to-closed.jsonl"
    (tmp_path / "closed" / "target.jsonl").write_text(RESULT_AND_ERROR)
    into_closed.symlink_to("../closed/target.jsonl")
    from_closed = tmp_path / "closed" / "to-open.jsonl"
    (tmp_path / "open" / "target.jsonl").write_text(RESULT_AND_ERROR)
    from_closed.symlink_to("../open/target.jsonl")
    (tmp_path / "closed").chmod(0o555)
    try:
        refused = run_without_privileges(
            emulator, tmp_path, *extract(schema, source, str(read_only_file), "--retry-errors")
        )
        assert refused.returncode == 2
        assert_one_line_error(refused, "the file is not writable for this user")
        assert read_only_file.read_text() == RESULT_AND_ERROR
        linked = run_without_privileges(
            emulator, tmp_path, *extract(schema, source, str(into_closed), "--retry-errors")
        )
        assert linked.returncode == 2
        closed = str(tmp_path / "closed")
        assert_one_line_error(linked, f"no file can be made in its folder {closed!r}")
        assert emulator.requests == []  # both said before LM Studio was asked
        retried = run_without_privileges(
            emulator, tmp_path, *extract(schema, source, str(from_closed), "--retry-errors")
        )
        assert retried.returncode == 0, retried.stderr
        assert all("result" in r for r in lines(tmp_path / "open" / "target.jsonl"))
    finally:
        (tmp_path / "closed").chmod(0o755)


def test_a_finished_read_only_output_is_nothing_to_do(
    emulator: LMStudioEmulator, files: tuple[Path, Path], tmp_path: Path
) -> None:
    """A guard for the check of a writable output, made before LM Studio is asked: an
    output that already holds every id needs no writing, read-only or not."""
    schema, source = files
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "out.jsonl"
    done = {"name": "Ann", "age": 3}
    target.write_text("".join(json.dumps({"id": i, "result": done}) + "\n" for i in "abc"))
    result = run_read_only(folder, emulator, *extract(schema, source, str(target)))
    assert result.returncode == 0, result.stderr
    assert "Nothing to do: all 3 ids are already in" in result.stderr


def test_own_output_is_still_resumed(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, source = files
    target = tmp_path / "out.jsonl"
    target.write_text(
        json.dumps({"id": "a", "result": {"name": "Ann", "age": 3}}) + '\n{"id": "b", "re'
    )
    result = run_cli(*extract(schema, source, "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "Removed an incomplete last line" in result.stderr
    assert sorted(r["id"] for r in lines(target)) == ["a", "b", "c"]


def test_whole_last_record_without_newline_is_kept(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    schema, source = files
    target = tmp_path / "out.jsonl"
    content = (
        json.dumps({"id": "a", "result": {"name": "Ann", "age": 3}})
        + "\n"
        + json.dumps({"id": "b", "result": {"name": "Bob", "age": 4}})
    )
    target.write_text(content)
    result = run_cli(*extract(schema, source, "out.jsonl"))
    assert result.returncode == 0, result.stderr
    assert "Removed" not in result.stderr
    assert "Skipping 2 ids" in result.stderr
    assert target.read_text().startswith(content + "\n")  # kept, its newline added
    assert sorted(r["id"] for r in lines(target)) == ["a", "b", "c"]
    assert len(emulator.predictions) == 1  # only "c" was asked


def test_scan_output_decisions() -> None:
    assert scan_output(b"", "f").keep == 0
    found = scan_output(b'{"id": 1, "result": 2}\n{"id": 2, "error": {}}\n{"id": 3, "res', "f")
    assert (set(found.done), set(found.failed), found.keep) == ({"1"}, {"2"}, 46)
    assert scan_output(b'{"id": 3, "res', "f").keep == 0  # a first line cut mid-write
    # Cut within its first bytes, or NUL bytes a crash left after the records: repaired
    # (found by a probe: refused as another program's file)
    for cut in (b"{", b'{"id', b'{"id":', b'{"id": '):
        assert scan_output(b'{"id": 1, "result": 2}\n' + cut, "f").keep == 23
        assert scan_output(cut, "f").keep == 0
    assert scan_output(b'{"id": 1, "result": 2}\n' + b"\x00" * 4096, "f").keep == 23
    assert scan_output(b'{"id": 1, "result": 2}\n{"i' + b"\x00" * 9, "f").keep == 23
    data = b'{"id": 1, "result": 2}\n{"id": 2, "error": {}}'  # a whole record, no newline
    whole = scan_output(data, "f")
    assert (set(whole.done), set(whole.failed), whole.keep, whole.newline) == (
        {"1"},
        {"2"},
        len(data),
        True,
    )
    for data in (
        b'{"keep":1}',
        b"x\n",
        b'{"id": 1, "result": 2}\nnope\n',
        b'{"id": 1, "result": 2}\nmy notes',
        b'{"id": 7, "settings": {"a": 1}}',  # whole JSON, not a record: not cut mid-write
        # Found by a probe: records joined by bare "\r" (old Mac line ends) were taken for
        # one line cut mid-write, and cut off; a UTF-16 file was taken, and appended to.
        b'{"id": "a", "result": 1}\r{"id": "b", "result": 2}\r',
        b'{"id": "a", "result": 1}\n{"id": "b", "result": 2}\r{"id": "c", "res',
        b'{"id": "a", "result": 1}\r{"id": "b", "result": 2}\n',
        b"\x00" * 4096,  # NUL bytes alone: not taken for an output
        '{"id": "a", "result": 1}'.encode("utf-16"),
        '{"id": "a", "result": 1}\n'.encode("utf-16-le"),
    ):
        with pytest.raises(CliError, match="left untouched"):
            scan_output(data, "f")
    crlf = scan_output(b'\xef\xbb\xbf{"id": "a", "result": 1}\r\n{"id": "b", "error": 2}\r\n', "f")
    assert (set(crlf.done), set(crlf.failed), crlf.keep) == ({'"a"'}, {'"b"'}, 54)


# -- chat: a failing command keeps the session ---------------------------------------------


def test_chat_save_failures_keep_the_session(emulator: LMStudioEmulator, tmp_path: Path) -> None:
    emulator.script(TEXT, ["First answer.", "Second answer."])
    command = script_path()
    chat = pexpect.spawn(
        command[0],
        [*command[1:], "--host", emulator.api_host, "chat", "-m", TEXT],
        env=cli_env(),
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=15,
        dimensions=(50, 200),
    )
    screen = io.StringIO()
    chat.logfile_read = screen
    try:
        chat.expect("you> ")
        chat.sendline("Hello")
        chat.expect("First answer.")
        for bad, why in [
            (".", "it is a directory"),
            ("/", "it is a directory"),
            ("no/such/folder/chat.json", "the folder 'no/such/folder' does not exist"),
            # found by an audit: "No such file or directory", of a file that exists
            ("/proc/version", "no file can be made in '/proc'"),
        ]:
            chat.expect("you> ")
            chat.sendline(f"/save {bad}")
            chat.expect(why)
        chat.expect("you> ")
        chat.sendline("Still here?")
        chat.expect("Second answer.")
        chat.expect("you> ")
        chat.sendline("/save chat.json")
        chat.expect("Saved 4 messages")
        chat.sendline("/exit")
        chat.expect(pexpect.EOF)
    finally:
        chat.close(force=True)
    assert "Traceback" not in screen.getvalue()
    assert screen.getvalue().count("! Cannot save to") == 4  # one line each, session kept
    assert chat.exitstatus == 0
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert [m["content"] for m in saved["messages"]] == [
        "Hello",
        "First answer.",
        "Still here?",
        "Second answer.",
    ]


# -- one line, the documented exit status ---------------------------------------------------


def test_a_save_name_with_a_nul_is_refused_as_such() -> None:
    """Found by a probe: ``/save a<NUL>b.json`` (piped in) was "unexpected ValueError ...
    (a bug: please report it)"."""
    from outlines_lmstudio.cli._chat import _save_target

    with pytest.raises(CliError, match="cannot hold a NUL character; the conversation is kept"):
        _save_target(Path("a\x00b.json"))


def test_a_save_name_too_long_for_the_first_file_is_said_so(tmp_path: Path) -> None:
    """Found by a review: a valid 250-character name was told its folder could hold no
    file (/save's first file is 14 characters longer, over the 255 a name can have)."""
    from outlines_lmstudio.cli._chat import _replace

    target = tmp_path / ("n" * 250)
    with pytest.raises(CliError) as info:
        _replace(target, "{}", target)
    assert "the name is too long: /save first writes a file whose name is 14" in str(info.value)
    assert "no file can be made" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_emulator_bad_port_is_one_line(run_cli: RunCli) -> None:
    result = run_cli("emulator", "--port", "99999", host=False)
    assert result.returncode == 2
    assert_one_line_error(result, "--port", "99999 is not a port")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            "from typing import Callable\nimport pydantic\n"
            "class Bad(pydantic.BaseModel):\n    f: Callable[[int], int]\n",
            "Cannot build a JSON schema for Bad (field 'f' of type typing.Callable[[int], int])",
        ),
        (
            "import pydantic\nclass Bad(pydantic.BaseModel):\n    x: 'Missing'\n",
            "(field 'x' of type Missing): `Bad` is not fully defined",
        ),
        (
            "import abc\nimport pydantic\nclass Shape(pydantic.BaseModel, abc.ABC):\n"
            "    @abc.abstractmethod\n    def area(self) -> float: ...\n"
            "class Bad(pydantic.BaseModel):\n    s: Shape\n",
            "holds an abstract class (at field 's' (Shape)) (abstract: area)",
        ),
    ],
)
def test_generate_type_whose_schema_cannot_be_built(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator, body: str, needle: str
) -> None:
    """Found by an audit of issue 15: the first two gave Pydantic's own words, without the
    field and its type the library names (the issue's example, ``--type mod:Bad``)."""
    (tmp_path / "mod.py").write_text(body)
    result = run_cli("generate", "--type", "mod:Bad", "hi")
    assert result.returncode == 2
    assert_one_line_error(result, needle)
    assert emulator.requests == []


_RAISING_VALIDATOR = """
import pydantic


class P(pydantic.BaseModel):
    name: str
    age: int

    @pydantic.field_validator("age")
    @classmethod
    def check(cls, value: int) -> int:
        return value // 0
"""


def test_a_type_whose_own_validator_raises_is_named_not_called_our_bug(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: "unexpected ZeroDivisionError ... a bug in outlines-lmstudio"."""
    (tmp_path / "vm.py").write_text(_RAISING_VALIDATOR)
    result = run_cli("generate", "--type", "vm:P", "hi")
    assert result.returncode == 1
    assert_one_line_error(result, "--type P's own code raised ZeroDivisionError", "in vm, line")
    assert "bug" not in result.stderr


def test_extract_fails_the_items_a_types_own_validator_raises_on_and_goes_on(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    (tmp_path / "vm.py").write_text(_RAISING_VALIDATOR)
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "b"}\n')
    command = ("extract", "--type", "vm:P", "--input", "in.jsonl", "--output", "out.jsonl")
    result = run_cli(*command)
    assert result.returncode == 1  # items failed, the run did not
    records = lines(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in records) == [1, 2]
    assert {r["error"]["type"] for r in records} == {"ZeroDivisionError"}
    assert "bug" not in result.stderr


@pytest.mark.parametrize("code", ["0", "'boom'"])
def test_a_type_module_that_exits_when_imported_is_named(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator, code: str
) -> None:
    """Found by a probe: sys.exit(0) at import ended the command with status 0, no word."""
    (tmp_path / "exits.py").write_text(f"import sys\nsys.exit({code})\n")
    result = run_cli("generate", "--type", "exits:P", "hi")
    assert result.returncode == 2
    assert_one_line_error(result, "importing 'exits' called sys.exit(", "must not exit")
    assert emulator.requests == []


_PERSON_MODULE = "from pydantic import BaseModel\n\n\nclass P(BaseModel):\n    name: str\n"


def test_files_of_the_current_directory_do_not_replace_modules_imported_after_the_type(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: the current directory stayed first on sys.path after --type was
    imported, so a sqlite3.py there ran in place of the standard library's (its output
    went into stdout), and a pprint.py broke the command with two tracebacks."""
    (tmp_path / "mine.py").write_text(_PERSON_MODULE)
    for name in ("sqlite3", "pprint"):
        (tmp_path / f"{name}.py").write_text(f"print('{name}.py of the current directory ran')\n")
    result = run_cli("generate", "--type", "mine:P", "hi")
    assert result.returncode == 0, result.stderr
    assert "ran" not in result.stdout + result.stderr
    assert json.loads(result.stdout)["name"] is not None


def test_a_type_module_named_like_a_loaded_module_says_so(
    run_cli: RunCli, tmp_path: Path, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: types.py here was never imported (the standard library's was
    loaded already), and the error said only that 'types' has no 'P'."""
    (tmp_path / "types.py").write_text(_PERSON_MODULE)
    result = run_cli("generate", "--type", "types:P", "hi")
    assert result.returncode == 2
    assert_one_line_error(result, "named like the module 'types' that is already loaded", "rename")
    assert emulator.requests == []


def test_failure_report_kinds() -> None:
    assert failure_report(CliError("x", 3)) == ("x", 3)
    message, code = failure_report(InvalidImageError("bad image")) or ("", 0)
    assert (message, code) == ("bad image", 2)
    assert failure_report(LMStudioConnectionError("gone")) == ("gone", 3)
    assert failure_report(PermissionError(13, "Permission denied", "out.jsonl")) == (
        "out.jsonl: Permission denied.",
        2,
    )
    assert failure_report(ZeroDivisionError("bug")) is None


def test_unexpected_error_is_one_line_unless_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from outlines_lmstudio import cli
    from outlines_lmstudio.cli import _emulator

    def boom(args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(_emulator, "run", boom)
    monkeypatch.delenv(cli.TRACEBACK_VARIABLE, raising=False)
    assert cli.main(["emulator"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unexpected ZeroDivisionError: a bug" in err
    assert cli.TRACEBACK_VARIABLE in err
    for off in ("0", "false", "no", "off", " "):  # set to turn it off: was a traceback
        monkeypatch.setenv(cli.TRACEBACK_VARIABLE, off)
        assert cli.main(["emulator"]) == 1
        assert "unexpected ZeroDivisionError: a bug" in capsys.readouterr().err
    monkeypatch.setenv(cli.TRACEBACK_VARIABLE, "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["emulator"])


def test_deeply_nested_lines_are_one_line_errors(
    run_cli: RunCli, files: tuple[Path, Path], tmp_path: Path
) -> None:
    schema, _ = files
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    result = run_cli(*extract(schema, deep, "out.jsonl"))
    assert result.returncode == 2
    assert_one_line_error(result, "deep.jsonl, line 1", "nested too deeply")
    with pytest.raises(CliError, match="left untouched"):
        scan_output(b"[" * 100_000 + b"]" * 100_000 + b"\n", "f")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_an_output_that_cannot_be_written_is_named_with_what_to_do(
    run_cli: RunCli, files: tuple[Path, Path]
) -> None:
    # A full disk mid-run was "No space left on device.": no file, no word of resuming.
    schema, source = files
    result = run_cli(*extract(schema, source, "/dev/full"))
    assert result.returncode == 2, result.stderr
    assert_one_line_error(
        result,
        "Cannot write output '/dev/full': No space left on device",
        "the same command again",
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
@pytest.mark.parametrize(
    "args", [("models",), ("generate", "Say hi", "--max-tokens", "4"), ("embed", "hello")]
)
def test_a_full_standard_output_is_named(emulator: LMStudioEmulator, args: tuple[str, ...]) -> None:
    """``> /dev/full``: the error names standard output, not only "No space left on device"."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*script_path(), "--host", emulator.api_host, *args],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            timeout=30,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "Cannot write standard output: No space left on device")


def test_a_command_that_fails_leaves_ctrl_c_as_it_was(
    sigterm_as_the_command_has_it: None,
    emulator: LMStudioEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Found by a probe: every command's end made Ctrl-C and SIGTERM only noted, so one that
    failed with a worker stuck could no longer be stopped (an interrupt's end alone does)."""
    from outlines_lmstudio.cli import main

    before = signal.getsignal(signal.SIGINT)
    assert main(["--host", emulator.api_host, "generate", "-m", "no-such-model", "hi"]) != 0
    assert signal.getsignal(signal.SIGINT) is before
    assert signal.getsignal(signal.SIGTERM) is _sigterm._on_sigterm
    assert signal.getsignal(signal.SIGHUP) is _sigterm._on_sigterm


def _capped_run(
    emulator: LMStudioEmulator, tmp_path: Path, stdin: Any, *args: str
) -> subprocess.CompletedProcess[str]:
    """The CLI with its address space capped at 4 GiB: an unbounded read fails in seconds
    with MemoryError (uncapped, it took all the machine's memory before failing)."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    return subprocess.run(
        [*script_path(), "--host", emulator.api_host, *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
        timeout=60,
        check=False,
        preexec_fn=cap,
    )


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("generate", "--schema", "/dev/zero", "hello"),
            subprocess.DEVNULL,
            "Schema file '/dev/zero' holds more than 64 MiB, the limit: no JSON schema is "
            "that large: check the path.",
        ),
        (
            ("generate", "-"),
            "/dev/zero",
            "Standard input (PROMPT -) holds more than 64 MiB, the limit: no model's "
            "context holds that much text: give a shorter one.",
        ),
    ],
    ids=["schema file", "prompt on standard input"],
)
def test_an_endless_file_is_refused_at_a_limit(
    emulator: LMStudioEmulator, tmp_path: Path, args: tuple[str, ...], stdin: Any, message: str
) -> None:
    """Found by a probe: `--schema /dev/zero` (or a prompt piped from it) was read whole,
    until the machine ran out of memory, with Ctrl-C and SIGTERM held off meanwhile."""
    with open(stdin, "rb") if isinstance(stdin, str) else contextlib.nullcontext(stdin) as feed:
        done = _capped_run(emulator, tmp_path, feed, *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_line_error(done, message)
    assert emulator.predictions == []


def test_a_schema_from_a_pipe_is_refused_once_it_has_given_more_than_the_limit(
    main_in_process: MainInProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator: LMStudioEmulator,
) -> None:
    """Found by mutation testing: nothing checked the limit on a pipe's size (only a regular
    file's, known before reading, and /dev/zero's, endless). A pipe that gives a half more
    than the limit is refused, not read whole (the limit is lowered to 1 MiB here)."""
    import outlines_lmstudio.cli._output_types as output_types

    monkeypatch.setattr(output_types, "SCHEMA_LIMIT", 1 << 20)
    fifo = tmp_path / "schema.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as pipe:
            pipe.write(b" " * (3 << 19))  # 1.5 MiB

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    done = main_in_process("generate", "-m", TEXT, "--schema", str(fifo), "hello")
    writer.join(timeout=10)
    assert not writer.is_alive()
    assert (done.returncode, done.stdout) == (2, "")
    assert_one_line_error(
        done,
        f"Schema file {str(fifo)!r} holds more than 1 MiB, the limit: no JSON schema is that "
        "large: check the path.",
    )
    assert emulator.predictions == []


def test_an_input_over_the_limit_is_refused_before_reading(
    main_in_process: MainInProcess,
    schema_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    emulator: LMStudioEmulator,
) -> None:
    """`extract --input` holds at most INPUT_LIMIT (1 GiB): a regular file over it is refused
    by its size, a device or pipe once it has given that much."""
    import outlines_lmstudio.cli._jsonl as jsonl

    monkeypatch.setattr(jsonl, "INPUT_LIMIT", 1 << 20)
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"id": "1", "prompt": "x" * (2 << 20)}) + "\n")
    for given in (str(big), "/dev/zero"):
        done = main_in_process(
            "extract", "--schema", str(schema_file), "--input", given, "--output", "out.jsonl"
        )
        assert done.returncode == 2
        assert_one_line_error(
            done,
            f"Input {given!r} holds more than 1 MiB, the limit: split it into smaller files "
            "(each run's --output keeps what is done).",
        )
    assert emulator.predictions == []


@pytest.mark.parametrize(
    ("stdout", "stderr", "error", "named"),
    [
        ("cp1252", "utf-8", UnicodeEncodeError("charmap", "\u65e5", 0, 1, "x"), "cp1252"),
        ("utf-8", "ascii", UnicodeEncodeError("ascii", "caf\u00e9", 3, 4, "x"), "ascii"),
    ],
    ids=["a code page's encoder calls itself charmap", "standard error failed"],
)
def test_a_stream_that_cannot_hold_the_text_is_named_by_its_encoding(
    monkeypatch: pytest.MonkeyPatch,
    stdout: str,
    stderr: str,
    error: UnicodeEncodeError,
    named: str,
) -> None:
    """Found by a probe and a review: "whose encoding is charmap" for cp1252, and standard
    output's encoding named when standard error was the one that failed."""
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding=stdout))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding=stderr))
    report = failure_report(error)
    assert report is not None
    assert (
        f"to the terminal or pipe, whose encoding is {named}: set PYTHONIOENCODING" in (report[0])
    )
