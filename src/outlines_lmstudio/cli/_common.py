"""What the subcommands share: errors and exit codes, rich, connecting, model lookup.

Exit codes of every command::

    0    success
    1    the job failed (server error, reply that does not validate, failed items)
    2    a usage or input error (bad option, unreadable file, bad schema, missing extra)
    3    LM Studio is not reachable, or the connection was lost
    129  hung up (SIGHUP: the terminal closed; handled as Ctrl-C, as SIGTERM is)
    130  interrupted (Ctrl-C)
    141  the reader of standard output went away
    143  terminated (SIGTERM, handled as Ctrl-C: see `outlines_lmstudio.cli._sigterm`)
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import errno
import functools
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import lmstudio as lms

from .. import _threads
from .._cache import Heard
from .._common import DEFAULT_CONNECT_TIMEOUT, download_to_load
from .._discovery import (
    NOT_LM_STUDIO,
    is_lm_studio,
    other_servers,
    search_default_ports,
    unresolved,
    why_not_lm_studio,
)
from .._exhausted import at_file_limit, files_hint, out_of_files
from .._hosts import host_problem
from .._install import install_command
from .._partial import LONE_SURROGATE
from .._sdk_errors import from_sdk, proxy_note
from .._silence import StalledWait, sdk_stall
from ._controls import escape_controls
from ._exit import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "ready",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CUT_OFF",
    "MAX_RETRIES",
    "CliError",
    "ModelInfo",
    "Session",
    "add_connection_options",
    "add_model_option",
    "add_sampling_options",
    "check_retries",
    "check_vision",
    "connect",
    "console",
    "end_open_line",
    "escape_controls",
    "escape_lone_surrogates",
    "for_terminal",
    "json_escaped",
    "json_for_terminal",
    "note_cut_off",
    "err_console",
    "error_exit_code",
    "error_message",
    "failure_report",
    "file_path",
    "one_line",
    "require_rich",
    "resolve_llm",
    "set_mode",
    "sampling_kwargs",
    "stderr_is_a_terminal",
    "system_prompt",
    "write_out",
]


_START_HINT = (
    "start the LM Studio server (Developer tab, or `lms server start`), "
    "pass --host HOST:PORT (or set LMSTUDIO_HOST), or use --emulator to try the bundled emulator"
)


class CliError(Exception):
    """A failure to report in one line, with the exit status to return.

    Parameters
    ----------
    message
        What went wrong and how to fix it.
    code
        The exit status (`EXIT_USAGE` by default).
    """

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        self.message = message
        self.code = code
        super().__init__(message)


def one_line(text: str) -> str:
    """Collapse an SDK message (several lines, server details) into one line."""
    for marker in ("Additional information from server", "Suggested potential remedy"):
        text = text.split(marker, 1)[0]
    return " ".join(text.split())


def _sdk_cause(exc: BaseException) -> BaseException:
    """Return the SDK error the library's error wraps (the error itself if none)."""
    cause = exc.__cause__
    return cause if cause is not None and from_sdk(cause) else exc


def error_message(exc: BaseException, again: str | None = "Run the command again") -> str:
    """Return the one-line message to show for an exception.

    The SDK's wait running out, and a lost connection, are told the same way whether
    the library wrapped them or not: the library's hints are for Python code (raise the
    limit with ``lmstudio.set_sync_api_timeout``, "the next call reconnects").

    Parameters
    ----------
    exc
        The failure.
    again
        What to do after a timeout or a lost connection (``chat``: send the message
        again); ``None`` to say nothing (the caller says it).
    """
    sdk = _sdk_cause(exc)  # the library's own errors are the SDK's classes too: not these
    if isinstance(sdk, StalledWait):  # not LM Studio's silence (found by a probe of Ctrl-Z)
        return (
            "The command was stopped or stalled (Ctrl-Z) for at least "
            f"{round(sdk.overslept, 1):g} s "
            f"past the {sdk.limit:g} s it waits for each message from LM Studio, so the "
            "request was given up, though LM Studio's reply may have come meanwhile"
            + (f". {again}." if again else ".")
        )
    if from_sdk(sdk) and isinstance(sdk, lms.LMStudioTimeoutError):  # it has no message
        return (
            f"LM Studio sent nothing for {lms.get_sync_api_timeout() or 0:g} s, the longest "
            "the command waits for each message: it may still be loading the model or "
            "reading a long prompt (LM Studio's server log shows it)"
            + (f". {again} when it is ready, or check the server." if again else ".")
        )
    if "not reachable" in str(sdk):  # it was reached when the command started
        return _gone(str(sdk), again)
    if from_sdk(sdk) and isinstance(sdk, lms.LMStudioWebsocketError):
        return f"Lost the connection to LM Studio: {one_line(str(sdk))}" + (
            f" {again} (if LM Studio stopped, start it first)." if again else ""
        )
    text = _for_the_shell(one_line(str(exc)))
    if from_sdk(exc):  # not the library's (an lmstudio.LMStudioError too): said already
        return f"LM Studio failed the request: {text}"
    return text


def _gone(text: str, again: str | None) -> str:
    """Say that LM Studio, reached when the command started, is not reachable any more.

    The SDK's message names the websocket address and gives hints for Python code
    (``lms.Client(...)``, the testing emulator): the command says what to do instead.
    """
    found = re.search(r"not reachable at (?:wss?://)?([^/\s]+)", text)
    where = f" at {found[1]}" if found else ""
    cause = re.search(r"\(due to (.*)\)\.?\s*Is LM Studio running", text, re.DOTALL)
    proxies = proxy_note()
    upgrade = None if cause is None else _UPGRADE_REFUSED.search(cause[1])
    if upgrade is not None and not proxies:
        # A web server that answers the greeting's URL, not LM Studio's API (found by a
        # probe: httpx_ws's exception was shown as it is).
        return (
            f"The server{where} is not LM Studio: it answers HTTP {upgrade[1]} to the websocket "
            f"of LM Studio's API. Check the port; {_START_HINT}."
        )
    if cause is not None and (proxies or not _REFUSED.search(cause[1])):
        # Not a server that stopped: a proxy of the environment, or a server on that port
        # that answers otherwise (found by a probe: both were told to start LM Studio).
        return f"Cannot reach LM Studio{where}: {one_line(cause[1]).rstrip('.')}.{proxies}"
    return (
        f"LM Studio is not reachable{where} any more: start the LM Studio server again "
        "(Developer tab, or `lms server start`)"
        + (f". {again} when it is running." if again else ".")
    )


# httpx_ws's refused websocket handshake: the server answered with another HTTP status.
_UPGRADE_REFUSED = re.compile(r"WebSocketUpgradeError: <Response \[(\d{3})")

# A connection refused or reset: nothing, or nothing any more, listens on the port.
_REFUSED = re.compile(r"ConnectError|Connection refused|Errno 111|ConnectionReset|Errno 104")


def _for_the_shell(text: str) -> str:
    """Say the library's Python hints in the command line's terms (options, not arguments)."""
    from outlines_lmstudio._dialects import PATTERN_WAYS_OUT, WAYS_OUT

    hints = (
        (
            WAYS_OUT,
            "Ways out: restructure the schema without it, or, for a GGUF model, describe the "
            "output with --regex instead of a schema.",
        ),
        (
            PATTERN_WAYS_OUT,
            "Ways out: write the pattern without it (--regex cannot hold it either).",
        ),
        ("; the reasoning so far is in .reasoning", "."),
        ("; the reasoning is in .reasoning", "."),
        ("aise max_tokens", "aise --max-tokens"),
    )
    for python, shell in hints:
        text = text.replace(python, shell)
    return text


def set_mode(fd: int, path: Path, mode: int) -> None:
    """Give the file open as ``fd`` (named ``path``) the permission bits ``mode``.

    Through the descriptor where Python can; by name where it cannot: Windows has no
    ``os.fchmod`` before Python 3.13, and ``extract --retry-errors`` and a second chat
    ``/save`` failed there as "unexpected AttributeError ... a bug" (found by a probe).
    """
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # pragma: no cover - Windows before Python 3.13
        os.chmod(path, mode)


def _stream_encoding(exc: UnicodeEncodeError) -> str:
    """Name the encoding of the standard stream that cannot hold ``exc``'s text.

    The stream's own name: a code page's encoder calls itself "charmap" (found by a probe,
    as cp1252), and standard error may be the one that failed (a review).
    """
    text = exc.object[exc.start : exc.end]
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None)
        if not isinstance(encoding, str):
            continue
        try:
            text.encode(encoding)
        except UnicodeEncodeError:
            return encoding
        except LookupError:
            continue
    return exc.encoding


def failure_report(
    exc: Exception, again: str | None = "Run the command again"
) -> tuple[str, int] | None:
    """Return the one-line message and exit status for any failure, ``None`` for a bug.

    Our errors and the SDK's are reported with `error_message` (``again`` is passed
    on); an ``OSError`` (a file that could not be read or written) as
    ``FILE: reason`` with `EXIT_USAGE`. Anything else is a bug of ours (``None``), unless
    the process had no file descriptor left (`at_file_limit`): then the limit is named,
    or it ran out of memory.
    """
    from outlines_lmstudio.errors import OutlinesLMStudioError

    if isinstance(exc, CliError):
        return exc.message, exc.code
    if isinstance(exc, OutlinesLMStudioError | lms.LMStudioError):
        return error_message(exc, again), error_exit_code(exc)
    if isinstance(exc, UnicodeEncodeError) and codecs.lookup(exc.encoding).name != "utf-8":
        # Every file the command writes is UTF-8: this is standard output or error in a
        # locale (or PYTHONIOENCODING) that cannot hold the text.
        return (
            f"Cannot write {exc.object[exc.start : exc.end]!a} to the terminal or pipe, whose "
            f"encoding is {_stream_encoding(exc)}: set PYTHONIOENCODING=utf-8 (or "
            "PYTHONUTF8=1), or use a UTF-8 locale (e.g. LANG=C.UTF-8).",
            EXIT_USAGE,
        )
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        if out_of_files(exc):  # not a file given: one of Python's own, or a socket
            named = f" ({exc.filename})" if exc.filename else ""
            return f"{exc.strerror or exc}{named}. {files_hint(exc)}", EXIT_USAGE
        if exc.filename:
            return f"{exc.filename}: {exc.strerror or exc}.", EXIT_USAGE
        if exc.errno in _FULL:  # a write with no file named: the command's standard output
            return (
                f"Cannot write standard output: {exc.strerror}. Free some space, or send the "
                "output elsewhere.",
                EXIT_USAGE,
            )
        return f"{exc.strerror or exc}.", EXIT_USAGE
    if isinstance(exc, MemoryError):  # found by a probe: "a bug in outlines-lmstudio"
        return (
            "The command ran out of memory: free some, or give it smaller inputs (images, "
            "prompts, files), or for extract a lower --concurrency.",
            EXIT_FAILURE,
        )
    if out_of_files(exc) or at_file_limit():
        # Out of files, the SDK's threads fail in ways of their own ("AsyncTaskManager ...
        # is currently inactive"): not a bug of ours (found by a probe at `ulimit -n 6`).
        said = error_message(exc).rstrip(".")  # a bare CancelledError says nothing
        what = f"{type(exc).__name__}: {said}" if said else type(exc).__name__
        return (
            f"{what}, with (almost) no file or socket left to open. {files_hint(exc)}",
            EXIT_FAILURE,
        )
    return None


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errors of a write to a device or file system that has no room left."""


def error_exit_code(exc: BaseException) -> int:
    """Return the exit status for an error raised by the library or the SDK."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, ConnectionError | lms.LMStudioWebsocketError) or (
        from_sdk(exc) and "not reachable" in str(exc)
    ):
        return EXIT_UNREACHABLE
    from outlines_lmstudio.errors import OutlinesLMStudioError, ParseError

    if isinstance(exc, ParseError):
        return EXIT_FAILURE  # the model's reply, not the caller's mistake
    if isinstance(exc, OutlinesLMStudioError) and isinstance(exc, TypeError | ValueError):
        return EXIT_USAGE  # the caller's mistake: bad schema, image, grammar...
    return EXIT_FAILURE


def require_rich() -> None:
    """Check that rich (the ``cli`` extra) is installed.

    Raises
    ------
    CliError
        With the exact install line, if it is not.
    """
    try:
        import rich  # noqa: F401
    except ImportError:
        raise CliError(
            f"The outlines-lmstudio command needs rich, which is not installed. "
            f"Install it with: {install_command('cli')}"
        ) from None


@functools.cache  # one class for every console (rich is imported on first use)
def _console_class() -> type[Console]:
    """Return rich's ``Console`` with a closed pipe left to ``main`` (status 141, no message).

    Rich's own ``on_broken_pipe`` raises ``SystemExit(1)``, which ``main`` cannot tell
    from a failed job; raising ``BrokenPipeError`` again reports it as the other commands do.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # nothing more to the closed pipe
            raise BrokenPipeError

    return _Console


def _environ() -> dict[str, str]:
    """Return the environment for rich, without a ``COLUMNS`` or ``LINES`` of 0.

    Rich takes ``COLUMNS=0`` as a width of 0 and then prints nothing at all (``models``
    showed no table and exited 0; chat showed no notes); without it, the terminal's own
    size is used, as for an unset ``COLUMNS``.
    """
    return {
        name: value
        for name, value in os.environ.items()
        if not (name in ("COLUMNS", "LINES") and value.isdigit() and int(value) == 0)
    }


def _size() -> tuple[int | None, int | None]:
    """Return the terminal's size for a ``TERM=dumb`` terminal, which rich takes as 80x25.

    Emacs' shell and some CI runners set ``TERM=dumb`` in a wide window: ``models`` left out
    columns of a 120-column ``COLUMNS`` (found by a probe). The size is read as for any
    other terminal (``COLUMNS``/``LINES``, else the terminal's, else 80x24).
    """
    if os.environ.get("TERM", "").lower() not in ("dumb", "unknown"):
        return None, None  # rich's own reading
    columns, lines = shutil.get_terminal_size()
    return columns, lines


def console() -> Console:
    """Return a rich console on standard output (markup off: styles go in `rich.text.Text`).

    Standard output that is not a terminal (a file, a pipe) is never taken for one: rich
    does so under ``FORCE_COLOR`` or ``TTY_COMPATIBLE`` (which CI runners set), and then
    ``generate --stream > out.json`` wrote the live display's frames and escape codes into
    the result, and a piped ``models`` its table (found by a probe). Results are data; the
    messages on standard error keep rich's reading.
    """
    width, height = _size()
    return _console_class()(
        highlight=False,
        markup=False,
        _environ=_environ(),
        width=width,
        height=height,
        force_terminal=None if _stdout_is_a_terminal() else False,
    )


def err_console() -> Console:
    """Return a rich console on standard error (messages, progress bars; markup off).

    Standard error that is not a terminal never animates: rich takes ``FORCE_COLOR`` and
    ``TTY_COMPATIBLE`` (which CI runners set) for a terminal, and ``TTY_INTERACTIVE`` for one
    that animates, and then wrote ``extract``'s progress bar into a CI log 10 times a second
    (found by a probe). Colours still follow rich's reading.
    """
    width, height = _size()
    return _console_class()(
        stderr=True,
        highlight=False,
        soft_wrap=True,
        markup=False,
        _environ=_environ(),
        width=width,
        height=height,
        force_interactive=None if stderr_is_a_terminal() else False,
    )


# -- options ---------------------------------------------------------------------------


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Add ``--host``, ``--emulator`` and ``--local``.

    Parameters
    ----------
    parser
        The parser (the main one, or a subcommand's).
    suppress
        Leave the options out of the namespace unless given (for subcommands, so
        that they do not override values given before the subcommand).
    """
    default_host: Any = argparse.SUPPRESS if suppress else None
    default_emulator: Any = argparse.SUPPRESS if suppress else False
    parser.add_argument(
        "--host",
        dest="api_host",
        metavar="HOST:PORT",
        default=default_host,
        help="LM Studio's API host (default: $LMSTUDIO_HOST, else LM Studio's default local ports)",
    )
    parser.add_argument(
        "--emulator",
        dest="use_emulator",
        action="store_true",
        default=default_emulator,
        help="run the command against the bundled LM Studio emulator (generated text)",
    )
    parser.add_argument(
        "--local",
        dest="use_local",
        action="store_true",
        default=default_emulator,
        help="run the command against the embedded real model (Gemma 3 270M on llama.cpp, "
        "greedy unless --temperature is given; needs the local extra)",
    )


def model_key(text: str) -> str:
    """Return a ``-m/--model`` value, refusing an empty one (``-m "$UNSET"``).

    Empty, it would silently mean "any loaded model", as an empty ``--host`` would mean
    the default ports.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is empty or blank, or has whitespace around it (a usage error,
        status 2, before connecting).
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty: give a model key (`outlines-lmstudio models` lists them), or leave "
            "the option out to use a loaded model"
        )
    if text != text.strip():  # found by a probe: sent, and "no model" came back (status 1)
        raise argparse.ArgumentTypeError(
            f"{text!r} has whitespace around it, which LM Studio's names do not: "
            f"pass {text.strip()!r}"
        )
    return text


def system_prompt(text: str) -> str:
    """Return a ``--system`` value, refusing an empty or blank one (``--system "$UNSET"``).

    Found by a probe: it was sent as a blank system message, which takes the place of a
    chat template's own default system prompt, where other empty options are refused.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is empty or blank (a usage error, status 2, before connecting).
    """
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty: give the system prompt's text, or leave the option out"
        )
    return text


def file_path(text: str) -> Path:
    """Return a file option's value (``--schema``, ``--input``...) as a path, refusing an empty one.

    Empty (``--schema "$UNSET"``), it would be read as ``.``, the current directory, and
    refused as "'.': it is a directory", which does not say what was wrong.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is empty (a usage error, status 2, before connecting).
    """
    if not text:
        raise argparse.ArgumentTypeError("is empty: give a file path")
    return Path(text)


def add_model_option(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``-m/--model KEY`` (a non-empty model key; ``None`` when not given)."""
    parser.add_argument("-m", "--model", type=model_key, metavar="KEY", help=help)


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--temperature`` and ``--max-tokens``."""
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    parser.add_argument(
        "--max-tokens", type=int, metavar="N", help="most tokens to generate per reply"
    )


MAX_RETRIES = 10
"""Most re-asks ``--retries`` takes: each is a whole new reply (minutes on a slow model)."""


def check_retries(retries: int) -> int:
    """Return ``--retries`` if it is from 0 to `MAX_RETRIES`.

    Raises
    ------
    CliError
        If it is negative or larger than `MAX_RETRIES`.
    """
    if retries < 0:
        raise CliError(f"--retries must be 0 or more, got {retries}.")
    if retries > MAX_RETRIES:
        raise CliError(
            f"--retries must be at most {MAX_RETRIES}, got {retries}: each retry asks for a "
            f"whole new reply, and a reply that fails {MAX_RETRIES} times in a row needs a "
            "clearer prompt or schema, not more tries."
        )
    return retries


def sampling_kwargs(args: argparse.Namespace, *, structured: bool = False) -> dict[str, Any]:
    """Return the inference keywords (``temperature``, ``max_tokens``) that were given.

    With ``--local`` and no ``--temperature``: ``temperature=0`` (greedy), which the
    banner `connect` prints then says; with ``--local`` and ``structured`` output (a record
    to extract from the prompt), also ``repeat_penalty=1.0`` (off), whatever the temperature.
    """
    from outlines_lmstudio._config import MAX_COUNT

    kwargs: dict[str, Any] = {}
    local = getattr(args, "use_local", False)
    if local and args.temperature is None:
        # Decided here, before the command reads its keywords (found by a probe: set later,
        # in `connect`, it only reached the "greedy" banner, and predictions went out at
        # LM Studio's default temperature).
        args.temperature = 0.0  # the 270M model is reliable only when greedy
    if local and structured:
        # The real engine's repeat penalty (LM Studio's 1.1 over the last 64 tokens) counts
        # the prompt's tokens, as llama.cpp's server does (LM Studio's own engine is inferred
        # to do the same): it kept the 270M model from copying the prompt's values into the
        # record ("aged 40" became age=1856, greedy or not). Free text keeps it: without
        # it, the model loops.
        kwargs["repeat_penalty"] = 1.0
        args.penalty_off = True  # the banner says so
    if args.temperature is not None:
        if not math.isfinite(args.temperature) or args.temperature < 0:
            raise CliError(
                f"--temperature must be a finite number, 0 or more, got {args.temperature}."
            )
        kwargs["temperature"] = args.temperature
    if args.max_tokens is not None:
        if args.max_tokens < 1:
            raise CliError(f"--max-tokens must be at least 1, got {args.max_tokens}.")
        if args.max_tokens > MAX_COUNT:
            raise CliError(f"--max-tokens must be at most {MAX_COUNT:,}, got {args.max_tokens:,}.")
        kwargs["max_tokens"] = args.max_tokens
    return kwargs


# -- connecting ------------------------------------------------------------------------


@dataclass
class Session:
    """A connected client and where it points.

    Attributes
    ----------
    client
        The entered ``lmstudio.Client``.
    host
        ``HOST:PORT`` of the server.
    emulated
        Whether the server is the bundled emulator started for this command.
    """

    client: lms.Client
    host: str
    emulated: bool = False


def _start_emulator(local: bool = False) -> Any:
    from outlines_lmstudio.testing import LMStudioEmulator, embedded_model
    from outlines_lmstudio.testing._llama import LlamaUnusableError

    flag, extras = ("--local", "cli,local") if local else ("--emulator", "cli")
    try:
        if not local:
            return LMStudioEmulator().start()
        say = err_console()
        try:
            models = [embedded_model(lambda line: say.print(line, style="dim"))]
        except (OSError, ValueError) as exc:  # a damaged model package, a cache it cannot
            # be kept in (found by a probe: "a bug")
            raise CliError(
                f"--local: the embedded model cannot be used: {exc}", EXIT_FAILURE
            ) from None
        return LMStudioEmulator(models).start()
    except LlamaUnusableError as exc:  # installed, but its library does not load
        raise CliError(f"{flag}: {exc}", EXIT_FAILURE) from None
    except ImportError as exc:
        raise CliError(
            f"{flag} needs {exc.name!r}, which is not installed. Install it with: "
            + install_command(extras)
        ) from None


def _load_embedded(client: lms.Client) -> None:
    """Load the embedded model's weights now, saying so, rather than at the first request."""
    from outlines_lmstudio.testing import EMBEDDED_MODEL_KEY

    err_console().print("Loading Gemma 3 270M into llama.cpp ...", style="dim")
    client.llm.model(EMBEDDED_MODEL_KEY).count_tokens("Hello")


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[Session]:
    """Connect to LM Studio (or a bundled emulator) for the duration of a command.

    Parameters
    ----------
    args
        The parsed arguments (``api_host``, ``use_emulator``).

    Yields
    ------
    Session
        The client, entered (the host was probed).

    Raises
    ------
    CliError
        If LM Studio is not reachable (`EXIT_UNREACHABLE`), with what to do.
    """
    host: str | None = getattr(args, "api_host", None)
    local = bool(getattr(args, "use_local", False))
    if getattr(args, "use_emulator", False) or local:
        if local and getattr(args, "use_emulator", False):
            raise CliError("Pass either --emulator or --local, not both.")
        if host:
            raise CliError(
                f"Pass either --host or {'--local' if local else '--emulator'}, not both."
            )
        emulator = _start_emulator(local)
        try:
            err_console().print(
                f"Using the embedded real model Gemma 3 270M (llama.cpp) at {emulator.api_host}"
                f"{', greedy' if getattr(args, 'temperature', None) == 0 else ''}"
                f"{', repeat penalty off' if getattr(args, 'penalty_off', False) else ''}."
                if local
                else f"Using the bundled LM Studio emulator at {emulator.api_host} "
                "(generated text, not a real model).",
                style="dim",
            )
            with lms.Client(emulator.api_host) as client:
                if local:
                    _load_embedded(client)
                yield Session(client, emulator.api_host, emulated=True)
        finally:
            emulator.stop()
        return
    if host is not None and not host.strip():  # given, but empty: not "use the default"
        raise CliError("--host is empty: give HOST:PORT, e.g. 127.0.0.1:1234, or leave it out.")
    source = "--host" if host else "LMSTUDIO_HOST"
    host = host or os.environ.get("LMSTUDIO_HOST") or None
    if host is not None:
        _check_host(_normalise_host(host, source), source, host)
    if host is None:
        # Port by port: another server on one (found by a probe: "unexpected
        # JSONDecodeError") neither fails the search nor ends it.
        host, skipped = search_default_ports()
        if host is None:
            answered = f" ({other_servers(skipped)})" if skipped else ""
            raise CliError(
                f"LM Studio is not reachable on its default local ports{answered}: {_START_HINT}.",
                EXIT_UNREACHABLE,
            )
    host = _normalise_host(host, source)
    try:
        # Our probe, not the SDK's (`client.__enter__()`), which waited for good on a
        # server that streams (found by a probe). The client needs no entering: given a
        # host, the SDK connects on first use.
        answering = is_lm_studio(host)
    except NOT_LM_STUDIO as exc:  # another server: HTML, an endless stream, no answer...
        raise CliError(
            f"The server at {host} is not LM Studio: {why_not_lm_studio(exc)}. Check the "
            f"port; {_START_HINT}.",
            EXIT_UNREACHABLE,
        ) from None
    except OSError:
        answering = False
    if not answering:
        if (why := unresolved(host)) is not None:  # found by a probe: "start LM Studio"
            raise CliError(
                f"Cannot reach LM Studio at {host}: {why}. Check its spelling.", EXIT_UNREACHABLE
            )
        raise CliError(f"LM Studio is not reachable at {host}: {_START_HINT}.", EXIT_UNREACHABLE)
    client = lms.Client(host)
    try:
        yield Session(client, host)
    finally:
        client.close()


def _check_host(host: str, source: str, given: str | None = None) -> None:
    """Refuse a ``HOST:PORT`` that is not one: no host name, a path, a bad port.

    A URL with a path (``http://localhost:1234/v1``, LM Studio's OpenAI-compatible
    address) would otherwise be reported as "not reachable" while the server runs.
    ``given``: what the user wrote (``http://``), when ``host`` is its normalised form.

    Raises
    ------
    CliError
        Naming ``source`` (``--host`` or ``LMSTUDIO_HOST``), before anything is sent.
    """
    if given is not None and not host:
        raise CliError(f"{source} {given!r} has no host name: give HOST:PORT, e.g. 127.0.0.1:1234.")
    problem = host_problem(host, "e.g. 127.0.0.1:1234 (see outlines-lmstudio --help)")
    if problem is not None:
        shown = given if given is not None else host  # as the user wrote it (found by a probe)
        raise CliError(f"{source} {shown!r}{problem}")


def _normalise_host(host: str, source: str = "--host") -> str:
    """Accept ``http://host:port/`` and ``ws://host:port`` spellings of ``host:port``.

    The scheme in any case (``HTTP://``). ``https://`` and ``wss://`` are refused: the
    SDK connects with plain ``ws://`` only, so the encryption asked for would be dropped
    (found by a probe: it was, silently).
    """
    host = host.strip()
    scheme, sep, rest = host.partition("://")
    if sep and scheme.lower() in ("https", "wss"):
        raise CliError(
            f"{source} {host!r} asks for an encrypted connection ({scheme}://), which the "
            "lmstudio SDK does not make (it speaks plain ws://): give HOST:PORT, and reach a "
            "remote LM Studio through a tunnel (ssh -L) if the network is not trusted."
        )
    if sep and scheme.lower() in ("http", "ws"):
        host = rest
    return host.rstrip("/")


# -- models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    """What the commands need to know about a loaded LLM.

    Attributes
    ----------
    identifier
        The identifier of the loaded instance found (to show which one answers).
    key
        The model key.
    vision
        Whether LM Studio reports that it accepts images.
    format
        The model format (``gguf`` for llama.cpp, ``safetensors`` for MLX...).
    name
        What the library is given to find the model for each request: the ``--model``
        value as typed, or the model key of the loaded instance picked when none was.
        Not ``identifier``: an instance unloaded during a long ``extract`` or ``chat``
        (in LM Studio's UI, or by its idle TTL) would then fail every later item,
        naming a model the user never typed; a model key is loaded again (found by a
        probe).
    """

    identifier: str
    key: str
    vision: bool
    format: str
    name: str

    @property
    def shown(self) -> str:
        """The key, with the loaded copy's identifier when it is another name.

        Found by a probe: after ``/model main`` the chat named the key alone, so with two
        copies of one model loaded it could not say which one answered.
        """
        return self.key if self.identifier == self.key else f"{self.key} ({self.identifier})"


def ready(session: Session, *namespaces: str) -> None:
    """Connect the client's SDK sessions ``namespaces`` (``"llm"``...), each in 10 s at most.

    The SDK connects a session on its first use and waits for the websocket's opening with
    no bound of its own: a server that sent its handshake reply a byte at a time held a
    command for good (found by a probe). The library bounds its own connections with
    ``connect_timeout`` (10 s by default); the command's first calls of the SDK go through
    here, so the bound is the same.

    Raises
    ------
    CliError
        `EXIT_UNREACHABLE`, if the connection is not complete in time.
    """
    if session.emulated:  # ours, started for the command
        return

    def slow(_: BaseException) -> CliError:
        return CliError(
            f"The server at {session.host} did not complete the connection (websocket "
            f"handshake and authentication) within {DEFAULT_CONNECT_TIMEOUT:g} s: check that "
            f"LM Studio is what answers on that port; {_START_HINT}.",
            EXIT_UNREACHABLE,
        )

    for namespace in namespaces:
        _threads.connect(getattr(session.client, namespace), DEFAULT_CONNECT_TIMEOUT, slow)


def _missing_model(key: str | None, session: Session) -> NoReturn:
    if key is None:
        raise CliError(
            f"LM Studio at {session.host} has no LLM loaded: pass --model KEY "
            "(`outlines-lmstudio models` lists them) or load a model in LM Studio.",
            EXIT_FAILURE,
        )
    raise CliError(
        f"LM Studio at {session.host} has no model {key!r}: run `outlines-lmstudio models` "
        "for the model keys, or download it in LM Studio.",
        EXIT_FAILURE,
    )


def _to_load(session: Session, key: str) -> ModelInfo | None:
    """Return what LM Studio reports of the downloaded LLM ``key``, if finding it loads it.

    ``None`` when an instance has the identifier ``key`` (it answers, whatever model it is
    of) or no downloaded LLM has that name.
    """
    loaded = [handle.identifier for handle in session.client.llm.list_loaded()]
    downloads = [model.info for model in session.client.llm.list_downloaded()]
    info = download_to_load(key, loaded, downloads)
    return None if info is None else _model_info(info, identifier=key, name=key)


def _model_info(info: Any, *, identifier: str, name: str) -> ModelInfo:
    """Return the `ModelInfo` of what LM Studio reports of a model (its SDK info)."""
    return ModelInfo(
        identifier=identifier,
        key=info.model_key,
        vision=bool(getattr(info, "vision", False)),
        format=str(info.format),
        name=name,
    )


def _looked_up(session: Session, key: str | None) -> tuple[Any, Any]:
    """Find (loading if needed) an LLM: its SDK handle and what LM Studio reports of it.

    A wait the SDK gave up because the command was stopped past its limit (Ctrl-Z during
    a load) is asked again, once, as the library does (found by a probe: a Ctrl-Z of 70 s
    during `chat -m`'s load ended the chat, "LM Studio sent nothing for 60 s").
    """
    llm, retried = session.client.llm, False
    while True:
        heard = Heard()  # the request, then each report of the load: each begins a wait
        try:
            handle = llm.model(key, on_load_progress=heard.beat) if key else llm.model()
            heard.beat()
            return handle, handle.get_info()
        except lms.LMStudioTimeoutError as exc:
            if (stall := sdk_stall(exc, heard.at, time.monotonic())) is None:
                raise
            if retried:
                raise stall from None  # said as a stall
            retried = True


def resolve_llm(
    session: Session, key: str | None, check: Callable[[ModelInfo], None] | None = None
) -> ModelInfo:
    """Find (loading if needed) an LLM and return what LM Studio reports about it.

    Parameters
    ----------
    session
        The connected session.
    key
        A model key or instance identifier; ``None`` for any loaded LLM.
    check
        Refuses a model the command cannot use (no vision for its images...). When
        ``key`` is a downloaded model's key, it is called before the model is loaded,
        with what LM Studio reports of the download: a model that would be refused is
        not loaded for nothing (found by a probe: ``generate --image`` to a text-only
        model that was not loaded waited for the load, then was refused, and left the
        model loaded). It is called again with the model found.

    Returns
    -------
    ModelInfo
        The instance identifier, key, vision support and format, and the name to give
        the library (``key``, else the model key of the instance found).

    Raises
    ------
    CliError
        If there is no such model (or no loaded model when ``key`` is None), or what
        ``check`` raised.
    """
    ready(session, "llm")
    if check is not None and key and (downloaded := _to_load(session, key)) is not None:
        check(downloaded)
    try:
        handle, info = _looked_up(session, key)
    except lms.LMStudioWebsocketError:
        raise
    except (
        lms.LMStudioModelNotFoundError,
        lms.LMStudioServerError,
        lms.LMStudioClientError,
    ) as exc:
        if "not reachable" in str(exc):
            raise
        text = str(exc).lower()
        if "domainmismatch" in text or "is an embedding model" in text:
            raise CliError(
                f"{key!r} is an embedding model, not an LLM: pick an LLM "
                "(`outlines-lmstudio models --capability chat`).",
            ) from None
        if key is None or "not found" in text or "cannot find" in text or "no model" in text:
            _missing_model(key, session)
        raise CliError(
            f"LM Studio at {session.host} cannot use model {key!r}: {one_line(str(exc))}",
            EXIT_FAILURE,
        ) from None
    if str(info.type) != "llm":
        raise CliError(
            f"{key!r} is a {info.type} model, not an LLM: pick an LLM "
            "(`outlines-lmstudio models --capability chat`).",
        )
    # With no --model, the key pins the model picked (not whichever is loaded later: the
    # model could change between items) while letting it be loaded again.
    found = _model_info(info, identifier=handle.identifier, name=key or info.model_key)
    if check is not None:
        check(found)
    return found


def check_vision(model: ModelInfo, count: int) -> None:
    """Refuse images for a model LM Studio does not report as a vision model.

    Raises
    ------
    CliError
        If ``count`` > 0 and the model has no vision support.
    """
    if count and not model.vision:
        raise CliError(
            f"{model.key!r} does not accept images (LM Studio reports no vision support): "
            "pick a vision model (`outlines-lmstudio models --capability vision`).",
        )


class _Stdout:
    """What `write_out` left on standard output."""

    open_line = False
    """The last text written did not end its line (a reply cut off mid-stream)."""

    held_cr = False
    """A terminal's stream ended a fragment with ``\r``: its line break may come next."""

    told_surrogates = False
    """Standard error said that lone surrogates are written as escapes (`_utf8_safe`)."""


def escape_lone_surrogates(text: str) -> str:
    r"""Return ``text`` with its lone surrogates (``"\ud83d"``, half of a pair) as ``\uXXXX``.

    UTF-8 cannot hold them; the escape is what the model wrote (JSON's own), and JSON
    text so written reads back to the same value.
    """
    return LONE_SURROGATE.sub(lambda found: f"\\u{ord(found[0]):04x}", text)


def _utf8_safe(text: str) -> str:
    r"""Return a model's text with its lone surrogates written as ``\uXXXX`` escapes.

    LM Studio sends a model's ``\ud800`` (half of a UTF-16 pair) as the character, which
    UTF-8 cannot hold: writing it failed as "unexpected UnicodeEncodeError ... a bug"
    (found by a probe). The escape is what the model wrote, as `json_text` writes it;
    standard error says so once, so the change is not silent.
    """
    if LONE_SURROGATE.search(text) is None:
        return text
    if not _Stdout.told_surrogates:
        _Stdout.told_surrogates = True
        with contextlib.suppress(Exception):  # a closed or broken stderr: the text goes on
            print(
                "outlines-lmstudio: note: the reply holds a lone surrogate (half of a UTF-16 "
                "pair), which UTF-8 cannot hold: it is written as its escape, e.g. \\ud800.",
                file=sys.stderr,
            )
    return escape_lone_surrogates(text)


CUT_OFF = {
    "maxPredictedTokensReached": "its token limit was reached (--max-tokens)",
    "contextLengthReached": "the model's context is full",
}
"""The stop reasons of a reply a limit cut off, as the commands say them."""


def note_cut_off(stop_reason: str | None) -> None:
    """Say on standard error that a text reply was cut off by a limit, if it was.

    Found by a probe: ``generate --max-tokens 3`` printed three words and nothing else,
    where ``chat`` says so; a structured reply cut off fails instead.
    """
    why = CUT_OFF.get(stop_reason or "")
    if why is not None:
        with contextlib.suppress(Exception):  # a closed or broken stderr: the text was written
            print(f"outlines-lmstudio: note: the reply was cut off: {why}.", file=sys.stderr)


def _stdout_is_a_terminal() -> bool:
    """Whether standard output is a terminal (not a file or pipe, nor closed: ``None``)."""
    return sys.stdout is not None and sys.stdout.isatty()


def stderr_is_a_terminal() -> bool:
    """Whether standard error is a terminal (not a file or pipe, nor closed: ``None``)."""
    return sys.stderr is not None and sys.stderr.isatty()


def for_terminal(text: str) -> str:
    """Return a model's text to print: its control characters escaped on a terminal.

    A reply is the user's to pipe as it is, but on a terminal an escape sequence in it
    (a prompt injection can put one there) would act on the terminal: found by a probe,
    ``chat`` let a reply set the window title and clear the screen. Line breaks and tabs
    are kept.
    """
    text = _utf8_safe(text)
    if _stdout_is_a_terminal():
        return escape_controls(text)
    return text


_JSON_UNESCAPED = re.compile(r"[\x7f-\x9f]")


def json_for_terminal(text: str) -> str:
    r"""Return JSON text to print: on a terminal, DEL and the 8-bit controls as ``\u`` escapes.

    JSON escapes the other control characters itself; these it writes as they are, and
    ``\x9b`` (a CSI to some terminals) would act on it. JSON's own escape keeps the text
    JSON (found by a review: Python's ``\x9b`` made it invalid).
    """
    return json_escaped(text) if _stdout_is_a_terminal() else text


def json_escaped(text: str) -> str:
    r"""Return JSON text with DEL and the 8-bit controls as ``\u`` escapes (the same JSON)."""
    if _JSON_UNESCAPED.search(text) is None:
        return text
    return _JSON_UNESCAPED.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def write_out(text: str) -> None:
    """Write text to standard output and flush it (for streamed fragments).

    On a terminal its control characters are escaped (`for_terminal`).
    """
    if not text:  # nothing to show: a held "\r" waits on (found by a review)
        return
    text = _utf8_safe(text)
    if _stdout_is_a_terminal():
        # A "\r\n" split across two fragments (Gemma's tokenizer writes them as two) showed
        # as a literal "\r" (found by a review): a final "\r" waits for the next fragment.
        if _Stdout.held_cr:
            text = ("\r" if text.startswith("\n") else "\\r") + text
            _Stdout.held_cr = False
        if text.endswith("\r"):
            text, _Stdout.held_cr = text[:-1], True
        text = escape_controls(text)
    sys.stdout.write(text)
    sys.stdout.flush()
    if text:
        _Stdout.open_line = not text.endswith("\n")


def end_open_line() -> None:
    """End a line of streamed text left open on a terminal, so a message starts on its own.

    Only on a terminal: standard output redirected to a file or a pipe keeps the text as
    it came.
    """
    if _Stdout.open_line and _stdout_is_a_terminal():
        write_out("\n")
