"""Reasoning models on a real LM Studio (0.4.19 or later).

Skipped unless LMSTUDIO_HOST is set, and each test unless its model is named:
LMSTUDIO_THINKING_MODEL (a GGUF thinking model, e.g. ``qwen/qwen3-4b-thinking-2507``) and
LMSTUDIO_GPT_OSS_MODEL (e.g. ``openai/gpt-oss-20b``).
"""

import os
from typing import Literal

import lmstudio as lms
import pydantic
import pytest

from outlines_lmstudio import ReasoningTruncatedError, from_lmstudio
from outlines_lmstudio._reasoning import HARMONY_TOKENS

MARKER_HEAD = "__LM_STUDIO_INTERNAL"


def _model(variable: str, name: str) -> object:
    key = os.environ.get(variable)
    reason = f"set {variable} to a {name} model key"
    return pytest.param(key, id=name, marks=pytest.mark.skipif(not key, reason=reason))


MODELS = [
    _model("LMSTUDIO_THINKING_MODEL", "thinking-gguf"),
    _model("LMSTUDIO_GPT_OSS_MODEL", "gpt-oss"),
]
BUDGET = 4096  # thinking models need room before the answer


class City(pydantic.BaseModel):
    name: str
    country: str


def clean(text: str) -> bool:
    return (
        MARKER_HEAD not in text
        and "<think>" not in text
        and not any(token in text for token in HARMONY_TOKENS)
    )


@pytest.mark.parametrize("key", MODELS)
def test_structured_answer_apart_from_reasoning(live_client: lms.Client, key: str) -> None:
    model = from_lmstudio(live_client, key)
    reply = model.reply("Which city is the capital of France?", City, max_tokens=BUDGET)
    assert clean(reply.text)
    assert City.model_validate_json(reply.text).name
    assert reply.reasoning  # a thinking model thinks
    assert reply.stats.reasoning_tokens
    assert reply.stats.time_to_first_answer_token is not None
    text = model("Which city is the capital of Italy?", City, max_tokens=BUDGET)
    assert clean(text)
    City.model_validate_json(text)


@pytest.mark.parametrize("key", MODELS)
def test_stream_parse_stream_and_simple_type(live_client: lms.Client, key: str) -> None:
    model = from_lmstudio(live_client, key)
    streamed = "".join(model.stream("Name one primary colour.", max_tokens=BUDGET))
    assert streamed.strip()
    assert clean(streamed)
    values = list(model.parse_stream("The capital of Spain?", City, max_tokens=BUDGET))
    assert isinstance(values[-1], City)
    answer = model("Is the sky blue on a clear day?", Literal["yes", "no"], max_tokens=BUDGET)
    assert answer in ("yes", "no")


@pytest.mark.parametrize("key", MODELS)
def test_budget_spent_on_reasoning(live_client: lms.Client, key: str) -> None:
    model = from_lmstudio(live_client, key)
    with pytest.raises(ReasoningTruncatedError, match="spent on reasoning"):
        model.parse("Think step by step: what is 17 * 23? Then give a city.", City, max_tokens=5)
