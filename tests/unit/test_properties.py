"""Property tests: the pure conversion code fails only with our errors."""

from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from outlines.inputs import Chat

from outlines_lmstudio._config import parse_inference_kwargs
from outlines_lmstudio._inputs import ChatPrompt, build_chat, format_input
from outlines_lmstudio._output import OutputPlan, plan_output
from outlines_lmstudio.errors import OutlinesLMStudioError

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "wizard", "", None])
messages = st.fixed_dictionaries(
    {"role": roles},
    optional={"content": values, "tool_call_id": values, "tool_calls": values},
)
chats = st.lists(messages | values, max_size=5).map(
    lambda items: Chat(cast(list[dict[str, Any]], items))
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(values, chats))
def test_format_input_returns_a_prompt_or_raises_our_error(model_input: Any) -> None:
    try:
        prompt = format_input(model_input)
    except OutlinesLMStudioError:
        return
    assert isinstance(prompt, ChatPrompt)
    build_chat(prompt, {})  # and the SDK accepts what we built (no images in these inputs)


schema_keywords = st.sampled_from(
    [
        "type",
        "properties",
        "items",
        "required",
        "enum",
        "anyOf",
        "$ref",
        "$defs",
        "minimum",
        "pattern",
        "format",
    ]
)
schemas = st.recursive(
    scalars | st.sampled_from(["object", "string", "integer", "array", "#/$defs/x", "https://x/y"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(schema_keywords, inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(schemas, values))
def test_plan_output_returns_a_plan_or_raises_our_error(output_type: Any) -> None:
    try:
        plan = plan_output(output_type)
    except OutlinesLMStudioError:
        return
    assert isinstance(plan, OutputPlan)
    if plan.response_format is not None:
        assert plan.response_format["type"] == "json"


kwarg_names = st.sampled_from(
    [
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "stop",
        "config",
        "preset",
        "model",
        "timeout",
        "seed",
        "bogus",
        "on_message",
    ]
)


@settings(max_examples=300)
@given(st.dictionaries(kwarg_names, values, max_size=4))
def test_parse_inference_kwargs_returns_args_or_raises_our_error(kwargs: dict[str, Any]) -> None:
    try:
        args = parse_inference_kwargs(kwargs)
    except OutlinesLMStudioError:
        return
    assert args.config is None or isinstance(args.config, dict)
