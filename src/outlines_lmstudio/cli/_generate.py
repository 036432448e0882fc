"""``outlines-lmstudio generate``: one-shot generation, free or structured."""

from __future__ import annotations

import argparse
import collections
from typing import Any

from ._common import (
    EXIT_FAILURE,
    MAX_RETRIES,
    CliError,
    ModelInfo,
    add_model_option,
    add_sampling_options,
    check_retries,
    check_vision,
    connect,
    file_path,
    for_terminal,
    json_for_terminal,
    note_cut_off,
    resolve_llm,
    sampling_kwargs,
    system_prompt,
    write_out,
)
from ._images import Attachment, load_image
from ._output_types import (
    OutputSpec,
    add_output_options,
    check_output_type,
    json_text,
    output_spec,
    to_json,
    type_code_error,
)
from ._text import check_options_text, check_text, read_stdin

__all__ = ["HELP", "add_arguments", "build_input", "check_grammar", "read_prompt", "run"]

HELP = "Generate one reply: free text, or structured by a JSON schema, type, choice or regex."
DESCRIPTION = """\
Generate one reply to PROMPT and print it. With --schema or --type the reply is a
JSON document validated against that schema (pretty-printed); with --choice it is
one of the choices; with --regex it matches the expression (grammar mode, GGUF
models only). Exit status 1 when the reply does not validate."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` options to ``parser``."""
    parser.add_argument("prompt", metavar="PROMPT", help='the prompt ("-" reads standard input)')
    add_model_option(parser, "model key (default: a loaded LLM)")
    parser.add_argument("--system", type=system_prompt, metavar="TEXT", help="system prompt")
    add_output_options(parser, text=True)
    parser.add_argument(
        "--image",
        action="append",
        type=file_path,
        default=[],
        metavar="PATH",
        help="attach an image (repeatable; needs a vision model; over 2048 px is downscaled)",
    )
    parser.add_argument("--stream", action="store_true", help="print the reply as it arrives")
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        metavar="N",
        help="re-ask up to N times when a structured reply does not validate "
        f"(0 to {MAX_RETRIES}; default: 1)",
    )
    add_sampling_options(parser)


def read_prompt(prompt: str) -> str:
    """Return the prompt (standard input for ``-``), refusing an empty one.

    Raises
    ------
    CliError
        If the prompt is empty, or is not UTF-8 text.
    """
    if prompt != "-":
        text = check_text(prompt, "PROMPT")
        if not text.strip():
            raise CliError("The prompt is empty: pass some text (or pipe it in with PROMPT -).")
        return text
    text = read_stdin("PROMPT -")
    if not text.strip():  # was told to pipe it in, as it was (found by a probe)
        what = "empty" if not text else "only whitespace"
        raise CliError(f"The prompt piped in (PROMPT -) is {what}: pipe some text in.")
    return text


def build_input(prompt: str, system: str | None, images: list[Attachment]) -> Any:
    """Build the model input: a string, ``[prompt, image...]``, or a chat with a system prompt."""
    content: Any = [prompt, *(a.image for a in images)] if images else prompt
    if system is None:
        return content
    from outlines.inputs import Chat

    return Chat([{"role": "system", "content": system}, {"role": "user", "content": content}])


def _print_value(value: Any, spec: OutputSpec) -> None:
    if spec.structured:
        # Escaped on a terminal too: JSON writes ESC as \u001b, but DEL and the 8-bit
        # controls (U+009B, a CSI to some terminals) as they are (found by a review).
        print(json_for_terminal(json_text(to_json(value), indent=2)))
    else:
        print(for_terminal(str(value)))


def reask_input(model_input: Any, raw: str, errors: list[str]) -> Any:
    """Return ``model_input`` followed by the invalid reply and the request to correct it."""
    from outlines.inputs import Chat

    from outlines_lmstudio._typed import reask_feedback

    if isinstance(model_input, Chat):
        messages = list(model_input.messages)
    else:
        messages = [{"role": "user", "content": model_input}]
    messages += [
        {"role": "assistant", "content": raw},
        {"role": "user", "content": reask_feedback(errors)},
    ]
    return Chat(messages)


def _stream_structured(
    model: Any, model_input: Any, spec: OutputSpec, kwargs: Any, retries: int
) -> Any:
    """Stream each attempt, re-asking as ``parse`` does; return the validated value.

    Raises
    ------
    ParseError
        When the last attempt does not validate (counting every attempt), or a reply
        was cut off.
    """
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio._typed import check_reply, validator_for
    from outlines_lmstudio.errors import ParseError

    for attempt in range(1, retries + 2):
        try:
            return _stream_once(model, model_input, spec, kwargs)
        except ParseError as exc:
            # Only a complete reply that does not validate is re-asked (as `parse` does):
            # not one cut off, nor a reasoning model's reply without an answer.
            if type(exc) is not ParseError:
                raise
            if attempt > retries:
                if attempt > 1:  # the same error, counting every attempt
                    validator = validator_for(plan_output(spec.output_type))
                    check_reply(validator, exc.raw, exc.stop_reason, attempt, True)
                raise
            model_input = reask_input(model_input, exc.raw, exc.errors)
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


def _stream_once(model: Any, model_input: Any, spec: OutputSpec, kwargs: Any) -> Any:
    """Show the partial object live on a terminal; return the validated value."""
    from rich.live import Live
    from rich.pretty import Pretty
    from rich.text import Text

    from ._common import console

    out = console()
    values = model.parse_stream(model_input, spec.output_type, **kwargs)
    if not out.is_terminal:
        last = collections.deque(values, maxlen=1)  # only the final, validated value
        return last[0] if last else None
    value: Any = None
    with Live(console=out, transient=True, auto_refresh=False) as live:
        try:
            for value in values:
                live.update(Pretty(to_json(value)), refresh=True)
        finally:
            # Rich draws a display's last frame whole as it stops, taller than the terminal
            # too, and a transient display then erases only the rows still on screen: the
            # rest stayed in the scrollback (found by a probe). An empty last frame leaves
            # nothing; the result is printed after.
            live.update(Text(""))
    return value


def check_grammar(model: ModelInfo, spec: OutputSpec) -> None:
    """Refuse ``--regex`` (grammar mode) for a model that is not GGUF, in the command's terms.

    Raises
    ------
    CliError
        If ``spec`` needs grammar mode and the model's engine is not llama.cpp.
    """
    if spec.grammar and model.format.lower() != "gguf":
        from ._models import FORMATS

        shown = FORMATS.get(model.format.lower(), model.format)
        raise CliError(
            f"--regex is sent as a llama.cpp grammar, which only GGUF models take, and "
            f"{model.key!r} is an {shown} model: pick a GGUF model (the Format column "
            "of `outlines-lmstudio models`), or describe the answer with --schema."
        )


def run(args: argparse.Namespace) -> int:
    """Generate; return the exit status."""
    check_options_text(args)  # first: a --regex that is not UTF-8 is said to be so
    spec = output_spec(args)
    check_output_type(spec, regex_option=True)
    prompt = read_prompt(args.prompt)
    if args.retries is None:
        args.retries = 1
    elif spec.output_type is None:  # found by a probe: accepted, and did nothing
        raise CliError(
            "--retries re-asks when a structured reply does not validate, and this reply is "
            "text (no --schema, --type, --choice or --regex): drop --retries, or say what to "
            "validate."
        )
    check_retries(args.retries)
    images = [load_image(path) for path in args.image]
    kwargs = sampling_kwargs(args, structured=spec.output_type is not None)
    from outlines_lmstudio import from_lmstudio

    with connect(args) as session:

        def usable(info: ModelInfo) -> None:
            check_vision(info, len(images))
            check_grammar(info, spec)

        info = resolve_llm(session, args.model, usable if images or spec.grammar else None)
        model = from_lmstudio(session.client, info.name, grammar=spec.grammar)
        model_input = build_input(prompt, args.system, images)
        if spec.output_type is None:
            if not args.stream:
                reply = model.reply(model_input, **kwargs)
                print(for_terminal(reply.text))
                note_cut_off(reply.stats.stop_reason)
                return 0
            stream = model.reply_stream(model_input, **kwargs)
            try:
                for chunk in stream:
                    if not chunk.reasoning:  # the answer only, as model.stream gives it
                        write_out(chunk.text)
            finally:  # a reader gone (| head): cancel on the server now, not when collected
                stream.close()
            write_out("\n")
            if stream.reply is not None:
                note_cut_off(stream.reply.stats.stop_reason)
            return 0
        try:
            if args.stream:
                value = _stream_structured(model, model_input, spec, kwargs, args.retries)
            else:
                value = model.parse(model_input, spec.output_type, retries=args.retries, **kwargs)
            _print_value(value, spec)
        except Exception as exc:  # a validator or serializer of the --type class: say so
            told = type_code_error(exc, spec.output_type)
            if told is None:
                raise
            raise CliError(told[0].upper() + told[1:] + ".", EXIT_FAILURE) from None
    return 0
