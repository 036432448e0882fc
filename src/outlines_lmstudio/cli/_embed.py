"""``outlines-lmstudio embed``: embedding vectors as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import cast

import lmstudio as lms

from ._common import EXIT_FAILURE, CliError, Session, add_model_option, connect, ready
from ._text import check_options_text, check_text, read_stdin

__all__ = ["HELP", "add_arguments", "embedding_model", "run"]

HELP = "Print the embedding vector of each TEXT as JSON."
DESCRIPTION = """\
Print a JSON list with one embedding vector (a list of floats) per TEXT, in order.
"-" reads one text per line from standard input (a blank line is an error)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` options to ``parser``."""
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to embed")
    add_model_option(parser, "embedding model key (default: a loaded one)")


def embedding_model(session: Session, key: str | None) -> lms.EmbeddingModel:
    """Return the embedding model ``key``, or the first loaded one.

    Raises
    ------
    CliError
        If there is no such model, or none is loaded and no key was given.
    """
    client = session.client
    ready(session, "embedding")
    if key is None:
        loaded = client.embedding.list_loaded()
        if not loaded:
            raise CliError(
                f"LM Studio at {session.host} has no embedding model loaded: pass --model KEY "
                "(`outlines-lmstudio models --capability embedding`) or load one.",
                EXIT_FAILURE,
            )
        return loaded[0]
    try:
        return client.embedding.model(key)
    except (lms.LMStudioServerError, lms.LMStudioModelNotFoundError) as exc:
        text = str(exc)
        if "domainMismatch" in text or "not an embedding" in text or _loaded_llm(session, key):
            raise CliError(
                f"{key!r} is not an embedding model: pick one from "
                "`outlines-lmstudio models --capability embedding`."
            ) from None
        raise CliError(
            f"LM Studio at {session.host} has no embedding model {key!r}: run "
            "`outlines-lmstudio models --capability embedding` for the model keys.",
            EXIT_FAILURE,
        ) from None


def _loaded_llm(session: Session, name: str) -> bool:
    """Tell whether ``name`` is the identifier of a loaded LLM.

    LM Studio says an LLM's key is not an embedding model, but it looks an identifier up
    among the embedding models alone (found by a probe: ``-m`` with an LLM loaded under
    ``main`` said that no such model exists).
    """
    try:
        return any(h.identifier == name for h in session.client.llm.list_loaded())
    except lms.LMStudioError:  # the not-found error stands
        return False


def _texts(given: list[str]) -> list[str]:
    """Return the texts, one per line of standard input for ``-``; refuse a blank one.

    Raises
    ------
    CliError
        For an empty or blank text (a blank line of standard input), empty standard
        input, ``-`` given twice (standard input is read once), or text that is not UTF-8.
    """
    texts: list[str] = []
    if given.count("-") > 1:
        raise CliError("- (standard input) may be given only once: it is read to its end.")
    for text in given:
        if text != "-":
            if not text.strip():
                raise CliError(f"Every TEXT must be non-empty; TEXT {len(texts) + 1} is blank.")
            texts.append(check_text(text, f"TEXT {len(texts) + 1}"))
            continue
        data = read_stdin("TEXT -").removesuffix("\n")
        if not data:
            raise CliError("- (standard input) has no text: every TEXT must be non-empty.")
        for number, line in enumerate(data.split("\n"), start=1):
            if not line.strip():
                raise CliError(
                    f"Every TEXT must be non-empty; line {number} of standard input is blank."
                )
            texts.append(line)
    return texts


def run(args: argparse.Namespace) -> int:
    """Embed the texts; return the exit status."""
    check_options_text(args)
    texts = _texts(args.texts)
    if getattr(args, "use_local", False):  # before starting it: it would have none
        raise CliError(
            "--local serves the embedded real model only, an LLM (Gemma 3 270M): it has no "
            "embedding model. Use --emulator for embeddings (vectors of the right shape from "
            "generated text), or LM Studio with an embedding model loaded."
        )
    with connect(args) as session:
        model = embedding_model(session, args.model)
        vectors = [[float(x) for x in cast("Sequence[float]", model.embed(t))] for t in texts]
    print(json.dumps(vectors))
    return 0
