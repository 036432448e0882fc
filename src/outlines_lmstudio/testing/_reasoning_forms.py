"""Reasoning models in the emulator: how thinking reaches the wire (pure, no I/O).

A reasoning model's reply is reasoning text plus an answer. How LM Studio sends
the two depends on its version, the engine and the model family; each way is a
*form*, chosen per model (`EmulatedModel.reasoning`) or per scripted reply
(`ReasoningReply.form`). All forms are **inferred** from public sources, not
observed on a real server by us; ``docs/reasoning.md`` gives the source of each.

========================  ================================================================
form                      what is sent
========================  ================================================================
``think``                 GGUF thinking model: ``<think>`` (``reasoningStartTag``), the
                          reasoning (``reasoning``), ``</think>`` (``reasoningEndTag``),
                          then the answer (``none``).
``marker``                LM Studio 0.4.19+: as ``think``, but the reasoning is closed by
                          the synthetic marker, typed ``reasoningEndTag``.
``marker-inline``         as ``marker``, but the marker arrives inside ``none``-typed text,
                          in the same fragment as the answer's first token.
``legacy``                LM Studio before 0.4.19: with a structured request the schema
                          constrains from the first token, so there is no reasoning
                          (lmstudio-bug-tracker #575); plain requests think as ``think``.
``mlx``                   MLX engine: the reasoning on its own channel (``reasoning``
                          fragments without tags), then the answer.
``harmony``               gpt-oss: Harmony control text as ``isStructural`` fragments
                          around the ``analysis`` reasoning and the ``final`` answer.
========================  ================================================================

Every form counts reasoning tokens (and tag tokens) toward ``maxTokens``, so a
small budget stops the reply inside the reasoning with ``maxPredictedTokensReached``.
The emulator's own reasoning text (`write_reasoning`) always holds a JSON-looking
draft of the answer and stray braces, so a client that searches for the first
``{`` takes the draft.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._engine import Fragment
from outlines_lmstudio.testing._sampler import split_fragments
from outlines_lmstudio.testing._tag_parsing import REASONING_PARSING, request_tags
from outlines_lmstudio.testing._wire import max_predicted_tokens, reasoning_budget

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import EmulatedModel

__all__ = [
    "FORMS",
    "SYNTHETIC_MARKER",
    "ReasoningReply",
    "check_form",
    "cut_at_tokens",
    "plan_reasoning",
    "reasoning_models",
    "shape_reply",
    "write_reasoning",
]

# LM Studio's marker, as reported in public threads (see docs/reasoning.md). Kept
# here as well as in the library: the emulator must not import the client side.
SYNTHETIC_MARKER = (
    "__LM_STUDIO_INTERNAL_LSEP_SYNTHETIC_REASONING_END_f4e9a8d2c6b14d0c9e5f3a7b8c1d2e6a__"
)

FORMS: dict[str, str] = {
    "think": "GGUF thinking model: typed <think>...</think>, then the answer",
    "marker": "LM Studio 0.4.19+: reasoning closed by the synthetic marker (typed end tag)",
    "marker-inline": "LM Studio 0.4.19+: the synthetic marker inside none-typed text",
    "legacy": "LM Studio before 0.4.19: no reasoning under a schema; <think> otherwise",
    "mlx": "MLX engine: reasoning on its own channel, no tags",
    "harmony": "gpt-oss Harmony: isStructural control text, analysis then final channel",
}

_THINK = ("<think>", "</think>")
# The analysis header goes out a token a fragment, as LM Studio streams tokens: a budget of
# one or two tokens stops inside it (the whole header was once one fragment, so nothing came).
_HARMONY_OPEN = ("<|channel|>", "analysis", "<|message|>")
_HARMONY_CLOSE = "<|end|>"
# One token a fragment, as LM Studio streams them (a token budget can end inside it).
_HARMONY_FINAL = ("<|start|>", "assistant", "<|channel|>", "final", "<|message|>")


def check_form(form: str | None) -> None:
    """Refuse an unknown reasoning form, naming the known ones.

    Parameters
    ----------
    form
        A form name, or ``None`` (no reasoning).

    Raises
    ------
    ValueError
        When ``form`` is not one of `FORMS`.
    """
    if form is not None and form not in FORMS:
        raise ValueError(
            f"unknown reasoning form {form!r}; use one of {', '.join(FORMS)} (or None)"
        )


@dataclass(frozen=True)
class ReasoningReply:
    """A scripted reply of a reasoning model: reasoning text, then the answer.

    Parameters
    ----------
    answer
        The answer text, sent as the emulator sends any scripted text.
    reasoning
        The reasoning text sent before it.
    form
        How to send the two (see `FORMS`); ``None`` uses the model's own form,
        or ``"think"`` if the model has none.
    """

    answer: str
    reasoning: str
    form: str | None = None

    def __post_init__(self) -> None:
        for name in ("answer", "reasoning"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(
                    f"ReasoningReply.{name} must be a string (the text sent), not "
                    f"{type(value).__name__} ({value!r:.60}); use '' for none"
                )
        check_form(self.form)


def write_reasoning(answer: str, key: str, seed: int) -> str:
    """Write deterministic reasoning text for an answer, with a JSON-looking draft.

    Parameters
    ----------
    answer
        The answer that will follow (the draft is shaped like it, with other values).
    key, seed
        What makes the text deterministic (the request and the emulator's seed).

    Returns
    -------
    str
        A few sentences holding a draft, braces and a false start.
    """
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    opener = rng.choice(["Okay, the user wants", "Let me see: the request is for", "So I need"])
    what = rng.choice(["a short answer", "a structured reply", "the requested format"])
    check = rng.choice(["the braces { and }", "every field", "the format again"])
    return (
        f"{opener} {what}. A first draft: {_draft(answer)}. Hmm, not quite; "
        f"let me check {check}. Wait, the first draft was wrong. "
        "I will write the final answer now."
    )


def _draft(answer: str) -> str:
    """Return a wrong answer shaped like ``answer`` (JSON stays JSON-looking)."""
    try:
        value = json.loads(answer)
    except ValueError:
        return '{"draft": true, "answer": "not yet"}'
    return json.dumps(_perturb(value))


def _perturb(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _perturb(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_perturb(v) for v in value[:2]]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return "draft " + value[:8]
    return value


def plan_reasoning(
    produced: list[Fragment] | ReasoningReply,
    model_form: str | None,
    *,
    key: str,
    seed: int,
) -> tuple[list[Fragment], list[str], str | None]:
    """Decide what a reasoning model thinks before its answer.

    Parameters
    ----------
    produced
        The answer tokens the emulator produced, or a scripted `ReasoningReply`.
    model_form
        The model's form (`EmulatedModel.reasoning`).
    key, seed
        Make the emulator's own reasoning text deterministic.

    Returns
    -------
    tuple[list[Fragment], list[str], str | None]
        The answer fragments, the reasoning tokens and the form (``None``: none).
    """
    if isinstance(produced, ReasoningReply):
        form = produced.form or model_form or "think"
        answer = [Fragment(t) for t in split_fragments(produced.answer)]
        return answer, split_fragments(produced.reasoning), form
    if model_form is None:
        return produced, [], None
    text = "".join(f.content for f in produced)
    return produced, split_fragments(write_reasoning(text, key, seed)), model_form


def _fragment(
    content: str, kind: str = "none", *, tokens: int = 1, structural: bool = False
) -> Fragment:
    return Fragment(content, tokens, kind, structural)


def _think_tags(config: Mapping[str, Any]) -> bool:
    """Whether LM Studio parses the model's ``<think>`` tags for this request.

    Inferred: parsing is on by default for thinking models; a request that turns it
    off, or names other tags than the model writes, gets the tags as plain text.
    """
    if not isinstance(config.get(REASONING_PARSING), Mapping):
        return True
    return request_tags(config) == _THINK


def shape_reply(
    form: str | None,
    reasoning: list[str],
    answer: list[Fragment],
    stop_reason: str,
    config: Mapping[str, Any],
    *,
    structured: bool,
) -> tuple[list[Fragment], str]:
    """Lay out reasoning and answer as wire fragments, within the token budget.

    Parameters
    ----------
    form
        The reasoning form, or ``None``.
    reasoning, answer
        The reasoning tokens; the answer fragments (already cut by stop strings).
    stop_reason
        The stop reason the answer alone would have.
    config
        The merged prediction config (``maxPredictedTokens``, the reasoning budget,
        reasoning parsing).
    structured
        Whether the request carried a JSON schema or grammar.

    Returns
    -------
    tuple[list[Fragment], str]
        The fragments to send (content, tokens count, reasoning type, structural
        flag) and the stop reason.
    """
    check_form(form)
    body = answer
    if form is None or (form == "legacy" and structured):
        return _budget(body, stop_reason, config)
    budget = reasoning_budget(config)
    if budget is not None and form != "mlx":  # llama.cpp's budget; MLX has none
        reasoning = reasoning[:budget]  # one token each; the section then ends as usual
    thought = [_fragment(t, "reasoning") for t in reasoning]
    if form == "mlx":
        out = [*thought, *body]
    elif form == "harmony":
        out = [
            *(_fragment(t, "reasoningStartTag", structural=True) for t in _HARMONY_OPEN),
            *thought,
            _fragment(_HARMONY_CLOSE, "reasoningEndTag", structural=True),
            *(_fragment(t, structural=True) for t in _HARMONY_FINAL),
            *body,
        ]
    elif not _think_tags(config):
        # Parsing off: the model's tags arrive as plain text (and LM Studio, not knowing
        # where the reasoning ends, cannot insert its marker either).
        plain = [_THINK[0], *reasoning, _THINK[1], "\n\n"]
        out = [*(_fragment(t) for t in plain), *body]
    else:
        out = [_fragment(_THINK[0], "reasoningStartTag"), *thought]
        if form == "marker":
            out += [_fragment(SYNTHETIC_MARKER, "reasoningEndTag", tokens=0), *body]
        elif form == "marker-inline":
            first = answer[0] if answer else Fragment("", 0)
            out += [_fragment(SYNTHETIC_MARKER + first.content, tokens=first.tokens_count)]
            out += body[1:]
        else:  # think, legacy without a schema
            out += [_fragment(_THINK[1], "reasoningEndTag"), _fragment("\n\n"), *body]
    return _budget(out, stop_reason, config)


def _budget(
    fragments: list[Fragment], stop_reason: str, config: Mapping[str, Any]
) -> tuple[list[Fragment], str]:
    """Stop at ``maxPredictedTokens``, counting every token (reasoning and tags too)."""
    value = max_predicted_tokens(config)
    if value is None:
        return fragments, stop_reason
    return cut_at_tokens(fragments, value, stop_reason, "maxPredictedTokensReached")


def cut_at_tokens(
    fragments: list[Fragment], limit: int, stop_reason: str, cut_reason: str
) -> tuple[list[Fragment], str]:
    """Keep the fragments whose tokens fit in ``limit``; ``cut_reason`` if any were cut.

    Parameters
    ----------
    fragments
        The reply's fragments, each with its ``tokens_count``.
    limit
        How many tokens fit (a negative limit fits none).
    stop_reason
        The stop reason when everything fits.
    cut_reason
        The stop reason when the limit cut the reply (``maxPredictedTokensReached``...).

    Returns
    -------
    tuple[list[Fragment], str]
        The fragments kept, and the stop reason.
    """
    used = 0
    for i, fragment in enumerate(fragments):
        used += fragment.tokens_count
        if used > max(0, limit):
            return fragments[:i], cut_reason
    return fragments, stop_reason


def reasoning_models() -> list[EmulatedModel]:
    """Return reasoning models, one per form, to add to a catalogue.

    ``LMStudioEmulator([*default_models(), *reasoning_models()])`` serves them
    next to the default models.

    Returns
    -------
    list[EmulatedModel]
        Loaded models whose ``reasoning`` is each of `FORMS` in turn.
    """
    from outlines_lmstudio.testing._catalogue import EmulatedModel

    def model(key: str, form: str, name: str, **kw: Any) -> EmulatedModel:
        return EmulatedModel(
            key,
            reasoning=form,
            context_length=32768,
            display_name=f"{name} ({FORMS[form]})",
            **kw,
        )

    # Qwen3 2507 and gpt-oss are trained for tool use, as LM Studio reports them (found by a
    # probe: `.act()` on them answered in text); DeepSeek R1's distills are not.
    qwen3 = {"params": "4B", "architecture": "qwen3", "size_bytes": 2_497_280_256, "tool_use": True}
    return [
        model("qwen3-4b-thinking-2507", "marker", "Qwen3 4B Thinking 2507", **qwen3),
        model("qwen3-4b-thinking-2507-inline", "marker-inline", "Qwen3 4B Thinking", **qwen3),
        model("qwen3-4b-thinking-2507-legacy", "legacy", "Qwen3 4B Thinking", **qwen3),
        model(
            "deepseek-r1-distill-qwen-7b",
            "think",
            "DeepSeek R1 Distill Qwen 7B",
            params="7B",
            architecture="qwen2",
        ),
        model(
            "qwen3-4b-thinking-2507-mlx",
            "mlx",
            "Qwen3 4B Thinking (MLX)",
            format="safetensors",
            params="4B",
            architecture="qwen3",
            size_bytes=2_263_000_000,
            tool_use=True,
        ),
        model(
            "openai/gpt-oss-20b",
            "harmony",
            "gpt-oss 20B",
            params="20B",
            architecture="gpt-oss",
            size_bytes=12_109_565_632,
            tool_use=True,
        ),
    ]
