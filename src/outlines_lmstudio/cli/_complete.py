"""``outlines-lmstudio complete``: a raw text completion (no chat template)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import lmstudio as lms

from ._common import CliError, add_sampling_options, connect, resolve_llm, write_out
from ._generate import read_prompt

__all__ = ["HELP", "add_arguments", "fragments", "run"]

HELP = "Continue a text prompt (raw completion, no chat template)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``complete`` options to ``parser``."""
    parser.add_argument("prompt", metavar="PROMPT", help='the text to continue ("-": stdin)')
    parser.add_argument("-m", "--model", metavar="KEY", help="model key (default: a loaded LLM)")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)"
    )
    parser.add_argument("--stream", action="store_true", help="print the text as it arrives")
    add_sampling_options(parser)


def _config(args: argparse.Namespace) -> lms.LlmPredictionConfigDict:
    config: lms.LlmPredictionConfigDict = {}
    if args.temperature is not None:
        if args.temperature < 0:
            raise CliError(f"--temperature must be 0 or more, got {args.temperature}.")
        config["temperature"] = args.temperature
    if args.max_tokens is not None:
        if args.max_tokens < 1:
            raise CliError(f"--max-tokens must be at least 1, got {args.max_tokens}.")
        config["maxTokens"] = args.max_tokens
    if args.stop:
        config["stopStrings"] = list(args.stop)
    return config


class _DeferredSigint:
    """Note the first Ctrl-C instead of raising it (main thread, default handler only).

    A ``KeyboardInterrupt`` raised inside the SDK's iterator closes the prediction
    channel before ``cancel()`` can be sent, so LM Studio would keep generating.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._active = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one interrupts

    def __enter__(self) -> _DeferredSigint:
        if self._active:
            signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._active and signal.getsignal(signal.SIGINT) == self._note:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def fragments(stream: lms.PredictionStream) -> Iterator[str]:
    """Yield the text of a prediction stream; leaving early cancels it on the server.

    Ctrl-C while waiting for the server is deferred until the prediction is
    cancelled, then raised as ``KeyboardInterrupt``.
    """
    events = iter(stream)
    finished = False
    try:
        while True:
            with _DeferredSigint() as sigint:
                fragment = next(events, None)
            if sigint.interrupted:
                raise KeyboardInterrupt
            if fragment is None:
                finished = True
                return
            yield fragment.content
    finally:
        if not finished:
            try:
                stream.cancel()
                for _ in events:
                    pass
            except lms.LMStudioError:
                pass


def run(args: argparse.Namespace) -> int:
    """Complete the prompt; return the exit status."""
    prompt = read_prompt(args.prompt)
    config = _config(args)
    with connect(args) as session:
        info = resolve_llm(session, args.model)
        handle = session.client.llm.model(info.identifier)
        stream = handle.complete_stream(prompt, config=config)
        if args.stream:
            for text in fragments(stream):
                write_out(text)
            write_out("\n")
        else:
            print("".join(fragments(stream)))
    return 0
