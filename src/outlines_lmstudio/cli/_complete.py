"""``outlines-lmstudio complete``: a raw text completion (no chat template)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import lmstudio as lms

from .._interrupt import SigintGuard
from ._common import (
    CliError,
    add_model_option,
    add_sampling_options,
    connect,
    for_terminal,
    note_cut_off,
    resolve_llm,
    sampling_kwargs,
    write_out,
)
from ._generate import read_prompt
from ._text import check_options_text

__all__ = ["HELP", "add_arguments", "fragments", "run"]

HELP = "Continue a text prompt (raw completion, no chat template)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``complete`` options to ``parser``."""
    parser.add_argument("prompt", metavar="PROMPT", help='the text to continue ("-": stdin)')
    add_model_option(parser, "model key (default: a loaded LLM)")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)"
    )
    parser.add_argument("--stream", action="store_true", help="print the text as it arrives")
    add_sampling_options(parser)


def _config(args: argparse.Namespace) -> lms.LlmPredictionConfigDict:
    sampling = sampling_kwargs(args)  # checks the values the same way as the other commands
    config: lms.LlmPredictionConfigDict = {}
    if "temperature" in sampling:
        config["temperature"] = sampling["temperature"]
    if "max_tokens" in sampling:
        config["maxTokens"] = sampling["max_tokens"]
    if args.stop:
        if not all(args.stop):  # an empty stop string stops nothing: say so, do not drop it
            raise CliError("--stop is empty: give the text generation should stop at.")
        config["stopStrings"] = list(args.stop)
    return config


def fragments(stream: lms.PredictionStream) -> Iterator[str]:
    """Yield the text of a prediction stream; leaving early cancels it on the server.

    Ctrl-C while waiting for the server is deferred until the prediction is
    cancelled, then raised as ``KeyboardInterrupt``.
    """
    from .._streams import stream_text  # it loads Outlines: not for every command's start

    return stream_text(stream, SigintGuard())


def run(args: argparse.Namespace) -> int:
    """Complete the prompt; return the exit status."""
    prompt = read_prompt(args.prompt)
    check_options_text(args)
    config = _config(args)
    with connect(args) as session:
        info = resolve_llm(session, args.model)
        handle = session.client.llm.model(info.name)
        stream = handle.complete_stream(prompt, config=config)
        if args.stream:
            for text in fragments(stream):
                write_out(text)
            write_out("\n")
        else:
            print(for_terminal("".join(fragments(stream))))
        note_cut_off(stream.result().stats.stop_reason)
    return 0
