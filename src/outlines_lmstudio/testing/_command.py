"""The emulator command: ``python -m outlines_lmstudio.testing``, ``outlines-lmstudio emulator``.

It lives in the emulator's package so that the emulator's own command needs neither the
CLI's dependencies (rich) nor its modules; ``outlines_lmstudio.cli._emulator`` re-exports it.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import errno
import importlib.util
import json
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from outlines_lmstudio._install import install_command

__all__ = [
    "HELP",
    "MAX_TOKEN_LATENCY",
    "SERVER_RECORDS",
    "add_arguments",
    "gguf_models",
    "load_models",
    "main",
    "run",
    "token_latency_problem",
]

HELP = "Serve an LM Studio emulator (for tests and demos) until interrupted."
SERVER_RECORDS = 1000
"""The ``max_records`` of the command's emulator, which serves until interrupted."""
MAX_TOKEN_LATENCY = 60.0
"""Most seconds per fragment ``--token-latency`` takes (a slow model is about 0.1 s)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``emulator`` options to ``parser``."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host outside loopback (the emulator has no access control)",
    )
    parser.add_argument(
        "--cors",
        action="store_true",
        help="take connections from web pages (a browser's Origin header), refused "
        "otherwise, as by LM Studio with CORS off",
    )
    parser.add_argument("--port", type=_port, default=0, help="port (default: a free port)")
    parser.add_argument(
        "--models",
        type=Path,
        metavar="FILE",
        help="JSON file: a list of models, each an object of EmulatedModel fields "
        '(e.g. {"key": "my-model", "vision": true}); default: the built-in catalogue',
    )
    parser.add_argument(
        "--gguf",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="also serve this GGUF file with llama.cpp (repeatable; needs the local extra); "
        "its key is the file name without .gguf",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of generated text")
    parser.add_argument(
        "--token-latency",
        type=float,
        default=0.0,
        metavar="S",
        help=f"seconds per fragment (0 to {MAX_TOKEN_LATENCY:g}; default: 0)",
    )
    parser.add_argument(
        "--prompt-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds of prompt processing before a reply's first fragment, with progress "
        f"reports (0 to {MAX_TOKEN_LATENCY:g}; default: 0; not for a --gguf model, whose "
        "prompt takes its real time)",
    )
    parser.add_argument(
        "--load-latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds a model load takes, with progress reports; a load can be cancelled "
        f"only while it runs (0 to {MAX_TOKEN_LATENCY:g}; default: 0, loads at once)",
    )
    parser.add_argument(
        "--slots",
        type=_slots,
        default=4,
        metavar="N",
        help="predictions a loaded model serves at once; more wait for a free slot "
        "(default: %(default)s, as LM Studio)",
    )


def _port(text: str) -> int:
    """Parse a TCP port (0 picks a free one)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 0 to 65535 (0: a free one)")
    return port


def _slots(text: str) -> int:
    """Parse ``--slots``: a whole number of at least 1."""
    try:
        slots = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of slots: use 1 or more"
        ) from None
    if slots < 1:
        raise argparse.ArgumentTypeError(f"{slots} slots would serve no prediction: use 1 or more")
    return slots


def load_models(path: Path) -> list[Any]:
    """Read a models file: a JSON list (or ``{"models": [...]}``) of EmulatedModel fields.

    Raises
    ------
    ValueError
        If the file is not such a list, or an entry has unknown fields, or names a
        ``gguf`` file that cannot be read or served (no llama-cpp-python).
    """
    from outlines_lmstudio._json_keys import RepeatedKey, without_repeats
    from outlines_lmstudio.testing import EmulatedModel

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: {exc.strerror or exc}") from exc
    # A leading byte order mark (a file saved by a Windows editor) is allowed (RFC 8259),
    # as in the CLI's other files.
    text = raw.removeprefix(codecs.BOM_UTF8)
    try:
        data = json.loads(text.decode("utf-8"), object_pairs_hook=without_repeats)
    except RecursionError:  # found by a probe: a traceback, "a bug in outlines-lmstudio"
        raise ValueError(f"{path} is nested too deeply to be a models file") from None
    except UnicodeDecodeError as exc:
        start = exc.start + len(raw) - len(text)
        raise ValueError(
            f"{path} is not UTF-8 text (the byte 0x{raw[start]:02x} at byte "
            f"{start + 1}): save it as UTF-8"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RepeatedKey as exc:  # found by a probe: {"vision": true, "vision": false} taken
        key = exc.args[0]
        raise ValueError(f"{path}: the key {key!r:.80} is written twice in one object") from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of models (or {{'models': [...]}})")
    models = []
    fields = [f.name for f in dataclasses.fields(EmulatedModel) if f.init]
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: each model must be a JSON object, got {entry!r:.200}")
        where = f"{path}, model {number}" + (
            f" ({entry['key']!r:.80})" if isinstance(entry.get("key"), str) else ""
        )
        unknown = [name for name in entry if name not in fields]
        if unknown:  # found by a probe: "EmulatedModel.__init__() got an unexpected keyword"
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r:.80}; the fields are {', '.join(fields)}"
            )
        try:
            models.append(EmulatedModel(**entry))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc
        except OSError as exc:  # its gguf file (a relative path is read from the cwd)
            gguf = os.path.abspath(exc.filename) if exc.filename else entry.get("gguf")
            raise ValueError(
                f"{where}: cannot read its gguf file {gguf!r}: {exc.strerror or exc}"
            ) from exc
        except ImportError as exc:  # a gguf model without llama-cpp-python
            raise ValueError(f"{where}: {exc}") from exc
    # Two of the file's models under one name, said as the file's (a review: a clash within
    # the file was blamed on a --gguf file given beside it).
    first: dict[str, int] = {}
    for number, model in enumerate(models, 1):
        for name in dict.fromkeys(model.names()):
            if first.setdefault(name, number) != number:
                raise ValueError(
                    f"{path}: models {first[name]} and {number} both answer to {name!r:.80}; "
                    "give each model a key, path and aliases of its own"
                )
    # Two loaded under one identifier, said as the file's too (found by a probe: LM Studio's
    # runtime message, without the file's name).
    loaded: dict[str, int] = {}
    for number, model in enumerate(models, 1):
        ident = model.identifier or model.key
        if model.loaded and loaded.setdefault(ident, number) != number:
            raise ValueError(
                f"{path}: models {loaded[ident]} and {number} are both loaded under the "
                f"identifier {ident!r:.80}; give one another identifier"
            )
    return models


def gguf_models(paths: list[Path]) -> list[Any]:
    """One `EmulatedModel` per GGUF file, keyed by the file name without ``.gguf``.

    Raises
    ------
    OSError, ValueError, ImportError
        If a file is missing or unreadable, or llama-cpp-python is not installed.
    """
    from outlines_lmstudio.testing import EmulatedModel

    return [EmulatedModel(_key(path), gguf=path) for path in paths]


def _key(path: Path) -> str:
    """Key a GGUF file by its name without the suffix, in any case (``.GGUF`` too)."""
    stem, suffix = path.name[:-5], path.name[-5:]
    return stem if suffix.lower() == ".gguf" and stem else path.name


_LATENCIES = {
    "token": "the pause before each fragment of every reply (0.1 is a slow model)",
    "prompt": "the prompt processing before every reply",
    "load": "the time every model load takes",
}


def token_latency_problem(latency: float, kind: str = "token") -> str | None:
    """Say what is wrong with a ``--token-latency`` (or ``--{kind}-latency``), or return None.

    Every latency takes 0 to `MAX_TOKEN_LATENCY` seconds.
    """
    option = f"--{kind}-latency"
    if not math.isfinite(latency) or latency < 0 or latency > MAX_TOKEN_LATENCY:
        return (
            f"{option} must be 0 to {MAX_TOKEN_LATENCY:g} seconds, got {latency:g}: "
            f"it is {_LATENCIES[kind]}."
        )
    return None


_T = TypeVar("_T")


def _interruptible(read: Callable[[Path], _T], path: Path) -> _T:
    """Run ``read(path)`` so that a Ctrl-C that comes at any moment stops the wait.

    Read in the main thread, a named pipe (or a slow file system) could lose a Ctrl-C:
    a signal that lands after ``open()`` returned and before ``read()`` began runs
    Python's handler only at the next bytecode, and the blocked ``read()`` never comes
    back to it (the command then hung until a second Ctrl-C). The read runs in a daemon
    thread (a blocked one does not hold up the exit) and the main thread waits in short
    timed joins, so a pending signal raises within one of them. The standard library has
    no interruptible blocking read, hence this helper.
    """
    box: list[_T] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            box.append(read(path))
        except BaseException as exc:  # handed to the main thread as it is
            failure.append(exc)

    worker = threading.Thread(target=work, name="read-models", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if failure:
        raise failure[0]
    return box[0]


_STOPPING = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop the emulator cleanly: SIGHUP too, a closed terminal or a dropped
ssh session (found by a probe: it left the uploads' temporary folder behind)."""


class _Interrupt:
    """The SIGINT/SIGTERM/SIGHUP handler: the first signal stops the emulator, the rest wait.

    GNU ``timeout`` (and service managers that signal a process group) send SIGTERM to
    the process and again to its group: a second KeyboardInterrupt raised while the
    emulator stops cut its stop short and exited 130 "interrupted" (found by a probe).
    """

    def __init__(self) -> None:
        self.stopping = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return  # already stopping: the stop finishes, then the "stopped" line
        self.stopping = True
        raise KeyboardInterrupt


def run(
    args: argparse.Namespace, *, error_prefix: str = "", warning_prefix: str = "warning: "
) -> int:
    """Start the emulator, print its host line and serve until SIGINT/SIGTERM.

    A problem with the options (a ``--token-latency``, ``--prompt-latency`` or
    ``--load-latency`` that is negative, not a number or above `MAX_TOKEN_LATENCY`) or
    the port is one line on stderr, after ``error_prefix`` (the CLI's
    ``outlines-lmstudio: error: ``), and status 2. Stopped by a signal, it
    returns 0, also when the reader of its output has gone (the ``stopped`` line is lost).
    With ``--allow-remote`` and a host outside loopback, the notice that anyone can use
    it is one line on stderr, after ``warning_prefix``.
    """

    def fail(message: str) -> int:
        print(f"{error_prefix}{message}", file=sys.stderr)
        return 2

    for kind in _LATENCIES:
        problem = token_latency_problem(getattr(args, f"{kind}_latency"), kind)
        if problem is not None:
            return fail(problem)
    for module in ("websockets", "outlines_core"):
        if importlib.util.find_spec(module) is None:
            install = install_command("testing")
            return fail(f"The emulator needs {module!r}. Install it with: {install}")
    from outlines_lmstudio.testing import LMStudioEmulator, default_models
    from outlines_lmstudio.testing._server import (
        REMOTE_HINT,
        EmulatorExposedWarning,
        exposed_notice,
        is_loopback,
    )

    try:
        models = _interruptible(load_models, args.models) if args.models else None
    except OSError as exc:
        return fail(f"Cannot read the models file: {exc.strerror or exc}.")
    except ValueError as exc:  # it was read: what it holds is wrong (found by a probe)
        return fail(f"Bad models file: {exc}.")
    if args.gguf:
        try:
            models = [*(default_models() if models is None else models), *gguf_models(args.gguf)]
        except OSError as exc:  # said "[Errno 2] No such file or directory: 'a.gguf'"
            return fail(f"Cannot serve the GGUF file: {exc.filename}: {exc.strerror or exc}.")
        except (ValueError, ImportError) as exc:
            return fail(f"Cannot serve the GGUF file: {exc}")
    try:
        # The user asked for it (--allow-remote): the notice is printed below, not warned,
        # which under -W error (PYTHONWARNINGS=error) was an "unexpected" error or a
        # traceback (found by a tester).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmulatorExposedWarning)
            emulator = LMStudioEmulator(
                models,
                host=args.host,
                port=args.port,
                seed=args.seed,
                token_latency=args.token_latency,
                prompt_latency=args.prompt_latency,
                load_latency=args.load_latency,
                slots=args.slots,
                allow_remote=args.allow_remote,
                cors=args.cors,
                # It serves until interrupted, and nobody reads its records: bound them.
                max_records=SERVER_RECORDS,
            )
    except ValueError as exc:
        clash = str(exc).startswith("duplicate model keys")
        if clash and args.gguf:  # found by a probe: a --gguf file's name clash had no context
            return fail(
                f"{exc}: a --gguf file's model key is its file name, which another model has; "
                "rename the file, or give the model in a --models file with a key of its own"
            )
        text = str(exc)
        if text.endswith(REMOTE_HINT):  # in the command's terms (a probe: Python's, first)
            text = text.replace(f"host={args.host!r}", f"--host {args.host!r}", 1)
            text = text.replace(REMOTE_HINT, "Pass --allow-remote to bind it anyway.")
        return fail(text)
    try:
        emulator.start()
    except (OSError, OverflowError, ValueError) as exc:
        return fail(f"Cannot listen on {args.host}:{args.port}: {_listen_error(exc)}")
    if not is_loopback(emulator.host):  # once it listens (found by a probe: before)
        print(f"{warning_prefix}{exposed_notice(emulator.host)}", file=sys.stderr, flush=True)
    stop = threading.Event()
    interrupt = _Interrupt()
    try:
        # Install both handlers: a background job may start with SIGINT ignored. Inside
        # the try, so a stop that comes as soon as the host line is read is a clean stop.
        for stopping in _STOPPING:
            signal.signal(stopping, interrupt)
        print(f"LM Studio emulator listening on {emulator.api_host}", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    if interrupt.stopping:
        # Stopped by a signal: more of them (a group's) are ignored from here on, also
        # while Python exits (it puts back the default handlers, which would end the
        # process with the signal's status after a clean stop).
        for stopping in _STOPPING:
            signal.signal(stopping, signal.SIG_IGN)
    try:
        print("LM Studio emulator stopped", flush=True)
    except BrokenPipeError:
        # The reader of the host line went away (a harness that read it and closed its
        # pipe, ``| head -1``): the emulator still stopped as asked. Nothing more reaches
        # the closed pipe (Python flushes standard output at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) and run the emulator.

    Ctrl-C before it serves (while it reads a models file or a large GGUF file) is one
    line on stderr and status 130, as ``outlines-lmstudio emulator`` says it.
    """
    parser = argparse.ArgumentParser(prog="python -m outlines_lmstudio.testing", description=HELP)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        return 130


def _listen_error(exc: BaseException) -> str:
    """Say why the emulator cannot listen, and what to do about a port in use.

    Found by a probe: a second emulator on a port in use said websockets' "[Errno 98]
    error while attempting to bind on address ('127.0.0.1', P): address already in use".
    """
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (
            "the port is in use (another program listens there: LM Studio, another "
            "emulator...): pick another --port, or leave it out for a free one"
        )
    return str(exc)
