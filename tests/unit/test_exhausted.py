"""`_exhausted`: errors of a process out of file descriptors name the limit (found by a
probe of exhausted resources: the SDK's "Is LM Studio running?", a file of rich's blamed as
one given to the CLI, and "a bug in outlines-lmstudio" at `ulimit -n 6`)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import lmstudio as lms
import pytest

from outlines_lmstudio._exhausted import at_file_limit, out_of_files
from outlines_lmstudio._sdk_errors import translate_sdk_error
from outlines_lmstudio.cli._common import EXIT_FAILURE, EXIT_USAGE, failure_report

EMFILE = OSError(errno.EMFILE, os.strerror(errno.EMFILE))


def _raise_while_out_of_files(how: str) -> None:
    try:
        raise EMFILE
    except OSError as exc:
        if how == "cause":
            raise RuntimeError("inactive") from exc
        if how == "context":
            raise RuntimeError("inactive")  # noqa: B904
        raise RuntimeError("inactive") from None


def test_out_of_files_reads_the_error_its_causes_and_the_sdk_s_text() -> None:
    assert out_of_files(EMFILE)
    assert out_of_files(OSError(errno.ENFILE, "Too many open files in system"))
    for how in ("cause", "context", "hidden context"):
        with pytest.raises(RuntimeError) as info:
            _raise_while_out_of_files(how)
        assert out_of_files(info.value), how  # the SDK's threads raise in these ways
    sdk = lms.LMStudioWebsocketError(
        "LM Studio is not reachable at ws://127.0.0.1:1234/llm (due to builtins.OSError: "
        f"[Errno {errno.EMFILE}] {os.strerror(errno.EMFILE)}). Is LM Studio running?"
    )
    assert out_of_files(sdk)
    assert not out_of_files(OSError(errno.ENOENT, "No such file or directory"))
    assert not out_of_files(lms.LMStudioWebsocketError("LM Studio is not reachable at ws://h"))


def test_the_sdk_s_unreachable_error_out_of_files_names_the_limit() -> None:
    sdk = lms.LMStudioWebsocketError(
        "LM Studio is not reachable at ws://127.0.0.1:1234/llm (due to builtins.OSError: "
        f"[Errno {errno.EMFILE}] {os.strerror(errno.EMFILE)}). Is LM Studio running?"
    )
    error = translate_sdk_error(sdk, host="127.0.0.1:1234", model="m", stage="connect")
    assert error is not None
    assert "ulimit -n" in str(error)
    assert "Start LM Studio's server" not in str(error)
    other = lms.LMStudioWebsocketError("LM Studio is not reachable at ws://127.0.0.1:1234/llm.")
    assert "Start LM Studio's server" in str(
        translate_sdk_error(other, host=None, model=None, stage="connect")
    )


def test_the_cli_does_not_blame_a_file_of_its_own_for_the_limit() -> None:
    """`rich` imports a module lazily: at the limit, its path was reported as if it were a
    file the user gave ("error: .../rich/_emoji_codes.py: Too many open files.")."""
    exc = OSError(errno.EMFILE, os.strerror(errno.EMFILE), "/venv/rich/_emoji_codes.py")
    report = failure_report(exc)
    assert report is not None
    message, code = report
    assert message.startswith("Too many open files (/venv/rich/_emoji_codes.py). ")
    assert "ulimit -n" in message
    assert code == EXIT_USAGE
    missing = failure_report(OSError(errno.ENOENT, "No such file or directory", "in.jsonl"))
    assert missing == ("in.jsonl: No such file or directory.", EXIT_USAGE)


def test_the_cli_says_memory_ran_out_not_that_it_is_a_bug() -> None:
    """Found by a probe: a MemoryError (an item's huge image) was "a bug in outlines-lmstudio:
    please report it", with the whole run lost for it."""
    report = failure_report(MemoryError())
    assert report is not None
    message, code = report
    assert message.startswith("The command ran out of memory: free some")
    assert "--concurrency" in message
    assert code == EXIT_FAILURE


LOW_LIMIT = textwrap.dedent(
    """
    import asyncio, os, resource
    from outlines_lmstudio._discovery import no_server_error
    from outlines_lmstudio._exhausted import at_file_limit
    from outlines_lmstudio.cli._common import failure_report

    def open_now():
        return len(os.listdir("/proc/self/fd")) - 1  # less the one that listed them

    error = RuntimeError("<AsyncTaskManager> is currently inactive.")
    print(failure_report(error) is None, at_file_limit())
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now() + 10, hard))
    print(failure_report(ZeroDivisionError("division by zero")))  # 10 to spare: a bug
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now() + 2, hard))
    print(at_file_limit())
    print(failure_report(error))
    print(failure_report(asyncio.CancelledError()))
    print(no_server_error("m"))
    """
)


def test_an_unexplained_cli_failure_with_no_descriptor_to_spare_names_the_limit() -> None:
    """At ``ulimit -n 6`` an SDK thread could not import its modules, and the CLI said
    "unexpected RuntimeError: ... is currently inactive. (a bug in outlines-lmstudio ...)",
    or a bare ``CancelledError``. With descriptors to spare an unexplained error is still
    reported as a bug (a review found a limit under 16 taken as the cause, with 10 free).
    The search of the default ports said "nothing answered as LM Studio"."""
    done = subprocess.run(
        [sys.executable, "-c", LOW_LIMIT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    normal, spare, at_limit, inactive, cancelled, search = done.stdout.splitlines()
    assert normal == "True False"  # a normal limit: a bug of ours, said as one
    assert spare == "None"
    assert at_limit == "True"
    assert inactive.startswith("('RuntimeError: <AsyncTaskManager> is currently inactive, with ")
    assert "`ulimit -n`, is " in inactive
    assert inactive.endswith(f", {EXIT_FAILURE})")
    assert cancelled.startswith("('CancelledError, with (almost) no file or socket left")
    assert "could open no connection" in search
    assert "`ulimit -n`, is " in search
    assert "Start LM Studio's server" not in search


def test_the_text_of_a_file_s_own_error_is_not_read() -> None:
    """A file named like the error is not the error (found by a review)."""
    missing = OSError(errno.ENOENT, "No such file or directory", "Too many open files.jsonl")
    assert not out_of_files(missing)
    assert failure_report(missing) == (
        "Too many open files.jsonl: No such file or directory.",
        EXIT_USAGE,
    )
    assert not out_of_files(RuntimeError("the model said: Too many open files"))


def test_the_whole_system_out_of_files_is_not_the_process_s_limit() -> None:
    report = failure_report(OSError(errno.ENFILE, os.strerror(errno.ENFILE)))
    assert report is not None
    assert "The system has as many files open as it may" in report[0]
    assert "ulimit" not in report[0]


def test_at_file_limit_is_false_here() -> None:
    assert not at_file_limit()


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_at_file_limit_reads_what_opening_one_more_file_says(
    code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: object) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "open", refuse)
    assert at_file_limit()
