"""The ``outlines-lmstudio`` command-line tool.

Subcommands live in their own modules, listed in `SUBCOMMANDS`. Each module
defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``,
and imports its optional dependencies inside ``run`` only.

Global options (``--host``, ``--emulator``) go before or after the subcommand;
every failure is reported in one line on standard error with an exit status
(see `outlines_lmstudio.cli._common`), never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import _sigterm
from ._controls import escape_controls
from ._exit import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE

__all__ = ["SUBCOMMANDS", "TRACEBACK_VARIABLE", "build_parser", "main"]

SUBCOMMANDS: dict[str, str] = {
    "models": "outlines_lmstudio.cli._models",
    "chat": "outlines_lmstudio.cli._chat",
    "generate": "outlines_lmstudio.cli._generate",
    "extract": "outlines_lmstudio.cli._extract",
    "complete": "outlines_lmstudio.cli._complete",
    "embed": "outlines_lmstudio.cli._embed",
    "emulator": "outlines_lmstudio.cli._emulator",
}
"""Subcommand name -> module implementing it."""

TRACEBACK_VARIABLE = "OUTLINES_LMSTUDIO_TRACEBACK"
"""Set to 1 to get the traceback of an unexpected error instead of its one-line report.

Unset, empty, ``0``, ``false``, ``no`` or ``off``: the one-line report.
"""

NO_CONNECTION = frozenset({"emulator"})
"""Subcommands that do not talk to LM Studio (no ``--host`` / ``--emulator``, no rich)."""

_EPILOG = """\
exit status: 0 success, 1 the job failed, 2 usage or input error,
3 LM Studio not reachable, 130 interrupted (Ctrl-C), 141 the output's reader went away,
129 hung up (SIGHUP: the terminal closed), 143 terminated (SIGTERM); both stop as
Ctrl-C stops a command.
See `outlines-lmstudio COMMAND --help` for each command."""


class _Once(argparse.Action):
    """argparse's ``store``, refusing an option given twice.

    argparse keeps the last value silently (found by a probe: ``extract --input a.jsonl
    --input b.jsonl`` read only ``b.jsonl``, and ``--output`` likewise); options that may
    repeat say so with ``action="append"``. The options given are noted per parser
    (`_GIVEN` + its ``prog``): a subcommand's parser fills a namespace of its own, which
    argparse copies over the main one, so `_Parser.parse_known_args` compares the notes
    of the two (``--host A generate --host B``).
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        given: dict[str, str] = vars(namespace).setdefault(_GIVEN + parser.prog, {})
        if option_string is not None and self.dest in given:
            parser.error(f"{given[self.dest]} was given twice: give it once")
        given[self.dest] = "/".join(self.option_strings)
        setattr(namespace, self.dest, values)


_GIVEN = "_given_to "  # a namespace attribute per parser: the options it was given


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (with where to find help), exit status 2; see `_Once`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)

    def parse_known_args(  # type: ignore[override]  # typeshed's overloads, one behaviour
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._subparsers is None:  # a subcommand's own arguments
            self._refuse_text_after_a_flag(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        seen: set[str] = set()  # destinations: `emulator`'s own --host is another option
        for name, given in vars(parsed).items():
            if name.startswith(_GIVEN):
                for dest in given.keys() & seen:
                    where = "before and after the subcommand"
                    self.error(f"{given[dest]} was given twice ({where}): give it once")
                seen.update(given)
        return parsed, extras

    def parse_args(  # type: ignore[override]  # typeshed's overloads, one behaviour
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # The subcommand's own parser says what follows it (found by a probe: `generate
            # --bogus x` was "outlines-lmstudio: error: ...", naming no command nor its help).
            given = list(sys.argv[1:] if args is None else args)
            command = str(getattr(parsed, "command", ""))
            after = command in given and all(e in given[given.index(command) + 1 :] for e in extras)
            parser = self._chosen(parsed) if after else self
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _chosen(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """Return the parser of the subcommand ``parsed`` names (else this one)."""
        for action in self._subparsers._group_actions if self._subparsers else ():
            if isinstance(action, argparse._SubParsersAction):
                chosen: argparse.ArgumentParser | None = action.choices.get(
                    str(getattr(parsed, action.dest, ""))
                )
                return chosen or self
        return self

    def _refuse_text_after_a_flag(self, args: Sequence[str]) -> None:
        """Refuse ``-hello``: ``-h``, a flag, with text after it that is no flag.

        Python 3.11 refuses it ("ignored explicit argument 'ello'", said with the way out
        in `error`), as 3.12.1 does; 3.13's argparse runs ``-h`` first, and ``generate
        -hello`` printed the help with status 0 (found by a probe on 3.13.0). Read as
        argparse reads it: each letter a flag of this parser, until one that takes a value
        (the rest is that value) or one that is no option at all.
        """
        options = self._option_string_actions
        for arg in args:
            if arg == "--":
                return
            if len(arg) <= 2 or arg[0] != "-" or arg[1] == "-" or arg in options:
                continue
            flag = options.get(arg[:2])
            if flag is None or flag.nargs != 0:
                continue  # not an option (argparse says so), or one given its value
            for at in range(2, len(arg)):
                next_flag = options.get("-" + arg[at])
                if next_flag is None:
                    names = "/".join(flag.option_strings)
                    self.error(f"argument {names}: ignored explicit argument {arg[at:]!r}")
                if next_flag.nargs != 0:
                    break
                flag = next_flag

    def error(self, message: str) -> NoReturn:
        dash = ""
        if "ignored explicit argument" in message or re.search(
            r"unrecognized arguments: -[^-]", message
        ):
            # `generate -hello` read as -h with "ello" (found by a probe): the way out. Not
            # for `--temprature`, a misspelt option (found by a review).
            dash = "; text that starts with '-' goes after --, e.g. -- '-hello'"
        self.exit(2, f"{self.prog}: error: {message}{dash} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    from .. import __version__
    from ._common import add_connection_options

    parser = _Parser(
        prog="outlines-lmstudio",
        description="LM Studio from the terminal: models, chat, structured generation.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_connection_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        if name not in NO_CONNECTION:
            add_connection_options(sub, suppress=True)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv
        The arguments (``sys.argv[1:]`` when None: the command line, where SIGTERM and
        SIGHUP are handled as Ctrl-C, see `outlines_lmstudio.cli._sigterm`).
    """
    if argv is None:
        _sigterm.install()
    _hold_stderr()
    try:
        status = _main(argv)
    except KeyboardInterrupt:  # while `_common`, and the SDK with it, is being imported
        _sigterm.hold()
        _report(_interrupted())
        status = EXIT_INTERRUPTED
    except RuntimeError as exc:
        if not _wrapped_interrupt(exc):
            raise
        _report(_interrupted())
        status = EXIT_INTERRUPTED
    if _sigterm.terminated():
        status = _sigterm.exit_status()
    if argv is None and (status == EXIT_INTERRUPTED or _sigterm.terminated()):
        _leave_stuck_threads(status)
    return status


STUCK_SECONDS = 5.0
"""How long an interrupted command waits for its worker threads before it exits anyway."""


def _leave_stuck_threads(status: int) -> None:
    """Exit with ``status`` now if a worker thread is still running `STUCK_SECONDS` later.

    Python joins its worker threads when it exits (``concurrent.futures`` joins every
    pool's): one blocked in a call nothing can cancel (an ``extract`` item's image that is a
    named pipe nobody writes to) kept an interrupted run alive for good after it had said it
    stopped, and a second Ctrl-C printed a traceback. What the command wrote is already
    written (each result line whole, under a lock), so nothing is lost by not waiting.
    """
    import signal
    import threading
    import time

    deadline = time.monotonic() + STUCK_SECONDS
    # A second Ctrl-C (or SIGTERM, SIGHUP) while waiting leaves now: `main` made them only
    # noted (`_sigterm.hold`), so that none cuts the command's report short.
    while not _sigterm.again() and time.monotonic() < deadline:
        alive = [
            t
            for t in threading.enumerate()
            if t.is_alive() and not t.daemon and t is not threading.current_thread()
        ]
        if not alive:
            # Python restores the default actions as it shuts down: a signal then ended the
            # process by that signal (found by a probe's test: status -15, not 143).
            for signum in (signal.SIGINT, *_sigterm.STOPS):
                signal.signal(signum, signal.SIG_IGN)
            return
        alive[0].join(0.05)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _wrapped_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a Ctrl-C (or SIGTERM, SIGHUP) that Python wrapped in another error.

    On Python 3.11 a ``KeyboardInterrupt`` raised in a descriptor's ``__set_name__``, while
    an import creates a class (``functools.cached_property``s: ``ipaddress``, Pydantic),
    becomes ``RuntimeError("Error calling __set_name__ ...")`` caused by it: a Ctrl-C at
    start-up gave a traceback, or a "bug" line with status 1 (found by a probe).
    """
    return isinstance(exc, RuntimeError) and isinstance(exc.__cause__, KeyboardInterrupt)


def _interrupted() -> str:
    return f"{_sigterm.stopped_by()}."


def _hold_stderr() -> None:
    """With standard error closed (``2>&-``), send the messages to ``/dev/null``.

    Python sets ``sys.stderr`` to None then, and ``print(..., file=None)`` writes to
    standard output: an error message would land among the results (``> out.json``).
    Descriptor 2 is held on ``/dev/null``, so no file the command opens takes its place.
    """
    try:
        os.fstat(2)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != 2:
            os.dup2(devnull, 2)
            os.close(devnull)
    if sys.stderr is None:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115


def _main(argv: Sequence[str] | None) -> int:
    from ._common import (
        EXIT_FAILURE,
        CliError,
        error_message,
        failure_report,
        require_rich,
    )

    try:
        from outlines_lmstudio.cli._text import text_arguments_as_utf8

        if argv is None:
            _quiet_sdk()
        # Inside the try: building the parser imports every subcommand (a Ctrl-C there
        # is "interrupted", status 130, not a traceback).
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage error (said, status 2)
            # A status, as every other error's (found by a probe: main(["--bogus"]) raised
            # SystemExit out of a program calling it, where docs/cli.md says it returns).
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        if argv is None:  # the command line's own arguments, decoded with the locale's
            text_arguments_as_utf8(args)
        _check_connection_options(args)
        _check_stdout(args)
        if args.command not in NO_CONNECTION:
            require_rich()
        status: int = args._run(args)
        return status
    except CliError as exc:
        if exc.code == EXIT_INTERRUPTED:  # `extract`'s count: a second signal must not cut
            _sigterm.hold()  # its report short (only an interrupt: a stuck worker must
        _report(exc.message)  # not make a failed command deaf to Ctrl-C, found by a probe)
        return exc.code
    except KeyboardInterrupt:
        _sigterm.hold()
        _report(_interrupted())
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, with the status a shell gives a
        # command killed by SIGPIPE (`cat`), not 1 ("the job failed") without a message.
        # Nothing more reaches the closed pipe (Python flushes standard output at exit).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if _wrapped_interrupt(exc):
            _report(_interrupted())
            return EXIT_INTERRUPTED
        report = failure_report(exc)
        if report is None and _traceback_asked():
            raise
        message, code = report or (
            f"unexpected {type(exc).__name__}: {error_message(exc)} (a bug in "
            f"outlines-lmstudio: please report it; set {TRACEBACK_VARIABLE}=1 to see the "
            "traceback)",
            EXIT_FAILURE,
        )
        _report(message)
        return code


def _traceback_asked() -> bool:
    """Whether `TRACEBACK_VARIABLE` asks for tracebacks (``0``, ``false``, ``no``, ``off``: no)."""
    value = os.environ.get(TRACEBACK_VARIABLE, "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def _quiet_sdk() -> None:
    """Keep the SDK's own log lines and shutdown warnings out of the terminal.

    The command reports every failure itself, in one line. Only done for a real
    command-line run (``argv`` None), never when ``main`` is called from Python.
    """
    import logging
    import warnings

    # The SDK logs under class-named top-level loggers ("AsyncWebsocketHandler", ...), which
    # reach stderr through logging's last-resort handler: a root handler keeps them away.
    logging.getLogger().addHandler(logging.NullHandler())
    warnings.filterwarnings(
        "ignore", message="coroutine .* was never awaited", category=RuntimeWarning
    )


def _check_connection_options(args: argparse.Namespace) -> None:
    """Refuse ``--host``, ``--emulator`` or ``--local`` before a command that does not connect.

    Given before ``emulator`` they would be accepted and silently ignored (``--host``
    there is LM Studio's address, not where the emulator listens).

    Raises
    ------
    CliError
        Naming the option and what to use instead.
    """
    from ._common import CliError

    if args.command not in NO_CONNECTION:
        return
    if args.api_host is not None:
        raise CliError(
            f"--host before {args.command!r} is LM Studio's address, which {args.command!r} "
            f"does not use: to choose where the emulator listens, put the options after the "
            f"command: outlines-lmstudio {args.command} --host ADDRESS --port N."
        )
    for given, option in ((args.use_emulator, "--emulator"), (args.use_local, "--local")):
        if given:
            raise CliError(
                f"{option} does not apply to {args.command!r}, which serves the synthetic "
                f"emulator itself: leave it out (to serve a GGUF model with llama.cpp, add "
                f"--gguf PATH after the command)."
            )


_STDOUT_PATHS = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})


def _check_stdout(args: argparse.Namespace) -> None:
    """Refuse to run with standard output closed (``>&-``) when results go there.

    ``extract`` to a file does not need it: descriptor 1 is then held on ``/dev/null``,
    so no file the command opens takes its place.

    Raises
    ------
    CliError
        If standard output is closed and the command writes its results there.
    """
    from ._common import CliError

    try:
        os.fstat(1)
    except OSError:
        pass
    else:
        if sys.stdout is not None:
            return
    if args.command != "extract" or str(args.output) in _STDOUT_PATHS:
        raise CliError(
            "standard output is closed, so the result would be lost: run the command "
            "with standard output open (redirect it to a file, or > /dev/null to discard it)."
        )
    devnull = os.open(os.devnull, os.O_WRONLY)
    if devnull != 1:
        os.dup2(devnull, 1)
        os.close(devnull)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - for the life of the process


def _report(message: str) -> None:
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            # A reply streamed to the terminal and cut off: the message on a line of its own.
            # (Not loaded yet, nothing was streamed; importing it here could be interrupted.)
            common = sys.modules.get(f"{__name__}._common")
            if common is not None:
                common.end_open_line()
    # Escaped: a name inside the user's schema (its JSON pointer), or a server's text, can
    # hold an escape sequence that would act on the terminal (found by a probe).
    # Not to be had after SIGHUP, whose terminal is gone (EIO): the status still tells.
    with contextlib.suppress(OSError, ValueError):
        print(f"outlines-lmstudio: error: {escape_controls(message)}", file=sys.stderr, flush=True)
