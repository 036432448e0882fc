"""The engine seam: who writes a model's text, tokens and vectors.

The protocol layer (`_predict`, `_endpoints`) asks an `Engine` for everything
a model produces and never knows which engine it is:

- the synthetic engine (`outlines_lmstudio.testing._predict.SyntheticEngine`):
  seeded, instant, scriptable; the default for every catalogue model;
- the llama.cpp engine (`outlines_lmstudio.testing._llama.LlamaEngine`): a real
  GGUF file run by llama-cpp-python, for a model with ``gguf=PATH``.

A prediction is a `Generation`: `Fragment` values as they are produced, then
how it ended (stop reason, prompt token count).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance
    from outlines_lmstudio.testing._records import Prediction
    from outlines_lmstudio.testing._server import LMStudioEmulator

__all__ = ["Engine", "Fragment", "Generation", "engine_for"]


@dataclass(frozen=True)
class Fragment:
    """One piece of a streamed prediction, as the ``fragment`` frame carries it.

    Attributes
    ----------
    content
        The text.
    tokens_count
        How many tokens produced it (``tokensCount``).
    reasoning_type
        ``reasoningType``: ``"none"``, ``"reasoning"``, ``"reasoningStartTag"``
        or ``"reasoningEndTag"``.
    is_structural
        ``isStructural``: text that belongs to the format, not to the answer.
    """

    content: str
    tokens_count: int = 1
    reasoning_type: str = "none"
    is_structural: bool = False


@dataclass
class Generation:
    """A prediction being produced.

    Iterate `fragments` to run it; `stop_reason` and `prompt_tokens` are final
    once the iteration ends (an engine may set them while it runs). Closing
    `fragments` early (``aclose``) stops the engine.

    Attributes
    ----------
    fragments
        The fragments, in order.
    stop_reason
        LM Studio's ``stopReason`` (``eosFound``, ``maxPredictedTokensReached``,
        ``stopStringFound``, ``contextLengthReached``; the protocol layer sets
        ``userStopped`` itself).
    prompt_tokens
        ``promptTokensCount``.
    stats
        Further ``stats`` fields the engine measured itself (they override the
        protocol layer's own timing), e.g. ``{"timeToFirstTokenSec": 0.2}``.
    """

    fragments: AsyncGenerator[Fragment, None]
    stop_reason: str = "eosFound"
    prompt_tokens: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """What serves a loaded model: predictions, tokenizer, template, embeddings.

    Every method may raise `outlines_lmstudio.testing._protocol.RequestError`
    (for example ``server_error(...)``); the protocol layer sends it as the
    request's error. No method may block the event loop.
    """

    async def generate(self, record: Prediction) -> Generation:
        """Start a prediction for ``record`` (messages, merged config, structured)."""
        ...

    async def tokenize(self, text: str) -> list[int]:
        """Return the token ids of ``text``."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Return the number of tokens of ``text``."""
        ...

    async def apply_prompt_template(self, messages: list[dict[str, Any]]) -> str:
        """Render a wire history with the model's prompt template."""
        ...

    async def embed(self, text: str) -> list[float]:
        """Return the embedding vector of ``text`` (embedding models)."""
        ...


def engine_for(emu: LMStudioEmulator, instance: Instance) -> Engine:
    """Return the engine serving ``instance``.

    A model without a GGUF file gets the synthetic engine; a model with one
    gets a llama.cpp engine, one per loaded instance. An instance loaded again
    the same way (same identifier, file and load config, e.g. after
    `LMStudioEmulator.reset`) gets the same engine back, so the model is not
    read again; an engine is dropped once nothing loaded matches it.
    """
    if instance.model.gguf is None:
        from outlines_lmstudio.testing._predict import SyntheticEngine

        return SyntheticEngine(emu, instance)
    from outlines_lmstudio.testing._llama import LlamaEngine

    with emu._lock:
        loaded = {_engine_key(i) for i in emu._catalogue.instances.values()}
        for key in [k for k in emu._engines if k not in loaded]:
            del emu._engines[key]
        key = _engine_key(instance)
        engine = emu._engines.get(key)
        if engine is None:
            engine = emu._engines[key] = LlamaEngine(instance)
        return engine


def _engine_key(instance: Instance) -> str:
    facts = [
        instance.identifier,
        instance.model.type,
        str(instance.model.gguf),
        instance.context_length,
        instance.load_fields,
    ]
    return json.dumps(facts, sort_keys=True, default=str)
