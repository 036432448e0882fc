"""``outlines-lmstudio embed``: embedding vectors as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import cast

import lmstudio as lms

from ._common import EXIT_FAILURE, CliError, Session, connect

__all__ = ["HELP", "add_arguments", "embedding_model", "run"]

HELP = "Print the embedding vector of each TEXT as JSON."
DESCRIPTION = """\
Print a JSON list with one embedding vector (a list of floats) per TEXT, in order.
"-" reads one text per line from standard input."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``embed`` options to ``parser``."""
    parser.add_argument("texts", nargs="+", metavar="TEXT", help="the texts to embed")
    parser.add_argument(
        "-m", "--model", metavar="KEY", help="embedding model key (default: a loaded one)"
    )


def embedding_model(session: Session, key: str | None) -> lms.EmbeddingModel:
    """Return the embedding model ``key``, or the first loaded one.

    Raises
    ------
    CliError
        If there is no such model, or none is loaded and no key was given.
    """
    client = session.client
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
        if "domainMismatch" in text or "not an embedding" in text:
            raise CliError(
                f"{key!r} is not an embedding model: pick one from "
                "`outlines-lmstudio models --capability embedding`."
            ) from None
        raise CliError(
            f"LM Studio at {session.host} has no embedding model {key!r}: run "
            "`outlines-lmstudio models --capability embedding` for the model keys.",
            EXIT_FAILURE,
        ) from None


def run(args: argparse.Namespace) -> int:
    """Embed the texts; return the exit status."""
    import sys

    texts: list[str] = []
    for text in args.texts:
        if text == "-":
            texts.extend(line for line in sys.stdin.read().splitlines() if line.strip())
        else:
            texts.append(text)
    if not texts or not all(t.strip() for t in texts):
        raise CliError("Every TEXT must be non-empty.")
    with connect(args) as session:
        model = embedding_model(session, args.model)
        vectors = [[float(x) for x in cast("Sequence[float]", model.embed(t))] for t in texts]
    print(json.dumps(vectors))
    return 0
