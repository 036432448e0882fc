"""The engine seam: who writes a model's text, tokens and vectors.

The protocol layer (`_predict`, `_endpoints`) asks an `Engine` for everything
a model produces and never knows which engine it is:

- the synthetic engine (`outlines_lmstudio.testing._synthetic.SyntheticEngine`):
  seeded, instant, scriptable; the default for every catalogue model;
- the llama.cpp engine (`outlines_lmstudio.testing._llama.LlamaEngine`): a real
  GGUF file run by llama-cpp-python, for a model with ``gguf=PATH``.

A prediction is a `Generation`: `Fragment` values as they are produced, then
how it ended (stop reason, prompt token count). An engine that processes the prompt
itself when the fragments are first iterated (the llama.cpp engine) reports how far it
is as `PromptProgress` values; for the others the protocol layer reports the emulator's
``prompt_latency``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from outlines_lmstudio.testing._records import Prediction
    from outlines_lmstudio.testing._tools import ToolCall

__all__ = ["Engine", "Fragment", "Generation", "PromptProgress"]


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


@dataclass(frozen=True)
class PromptProgress:
    """How far an engine has processed a prompt (a ``promptProcessingProgress`` report).

    ``total = cached + processed + unprocessed``, as the ``details`` of LM Studio's
    report count them.

    Attributes
    ----------
    total
        The prompt's tokens (``totalPromptTokenCount``).
    cached
        Tokens reused from the cache, not processed again (``cachedTokenCount``).
    processed
        Tokens processed so far (``processedPromptTokenCount``).
    """

    total: int
    cached: int = 0
    processed: int = 0

    @property
    def progress(self) -> float:
        """The share of the tokens to process that is done, from 0 to 1.

        Inferred: LM Studio's ``progress`` counts the tokens it processes, not the
        cached ones (its ``details`` say which are which).
        """
        todo = self.total - self.cached
        return 1.0 if todo <= 0 else min(1.0, self.processed / todo)


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
        protocol layer's own timing), e.g. ``{"timeToFirstTokenSec": 0.2}``, and
        ``stopString``: the stop string that ended the reply (``stopStringFound``).
    tool_call
        The tool call the reply ends with (``stop_reason`` is then ``"toolCalls"``);
        the protocol layer streams its ``toolCallGeneration*`` events.
    processes_prompt
        Set by the engine: it processes the prompt itself when `fragments` is first
        iterated, and awaits `on_progress` as it goes (0 at its start, a report after
        each batch of tokens, 1 when done, before the first fragment). False: the
        protocol layer reports the prompt's processing itself (``prompt_latency``).
    on_progress
        Set by the protocol layer before it iterates `fragments` (None: nobody listens).
        It may raise to stop the prediction (its model was unloaded); the exception
        comes out of `fragments`.
    first_token_at
        Set by an engine that decodes tokens: when it decoded the first one
        (``time.monotonic()``), for ``timeToFirstTokenSec`` and ``tokensPerSecond``. A
        stop string's scan may hold the first tokens back (they might begin it), so the
        first fragment sent can come later than the first token (found by a probe: 1.03 s
        against 0.075 s). None: the protocol layer times the first fragment it sends.
    held_tokens
        Set by an engine that decodes tokens, when it stops: the tokens it decoded but
        never gave out, held back by a stop string's scan. A cancelled prediction counts
        them as predicted, as LM Studio counts what it decoded (found by a probe: a reply
        cancelled while its text was held reported 0 tokens for 17 decoded).
    """

    fragments: AsyncGenerator[Fragment, None]
    stop_reason: str = "eosFound"
    prompt_tokens: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    tool_call: ToolCall | None = None
    processes_prompt: bool = False
    on_progress: Callable[[PromptProgress], Awaitable[None]] | None = None
    first_token_at: float | None = None
    held_tokens: int = 0


class Engine(Protocol):
    """What serves a loaded model: predictions, tokenizer, template, embeddings.

    Every method may raise `outlines_lmstudio.testing._wire.RequestError`
    (for example ``server_error(...)``); the protocol layer sends it as the
    request's error. No method may block the event loop.
    """

    async def generate(self, record: Prediction) -> Generation:
        """Start a prediction for ``record`` (messages, merged config, structured).

        Take nothing that is used up (a scripted reply) before `Generation.fragments` is
        first iterated: a prediction cancelled before it runs (in a delay fault, waiting
        for a slot, processing its prompt) never iterates them, and its scripted reply is
        left to the next request.
        """
        ...

    async def tokenize(self, text: str) -> list[int]:
        """Return the token ids of ``text``."""
        ...

    async def count_tokens(self, text: str) -> int:
        """Return the number of tokens of ``text``."""
        ...

    async def apply_prompt_template(
        self, messages: list[dict[str, Any]], opts: Mapping[str, Any]
    ) -> str:
        """Render a wire history with the model's prompt template.

        ``opts`` are the request's ``LLMApplyPromptTemplateOpts``: ``omitBosToken`` and
        ``omitEosToken`` leave those tokens out of the text.
        """
        ...

    async def embed(self, text: str) -> list[float]:
        """Return the embedding vector of ``text`` (embedding models)."""
        ...
