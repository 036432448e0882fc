import functools
from decimal import Decimal
from fractions import Fraction
from typing import Any

import lmstudio as lms
import msgspec
import numpy as np
import pytest

from outlines_lmstudio._adapter import LMStudioTypeAdapter
from outlines_lmstudio._common import check_concurrency, check_retries
from outlines_lmstudio._config import (
    MAX_SECONDS,
    SETTINGS,
    SIMPLE_KWARGS,
    accepted_keywords,
    check_seconds,
    parse_inference_kwargs,
)
from outlines_lmstudio.errors import InvalidInferenceArgumentError, InvalidInferenceValueError


def test_outlines_style_keywords_map_to_sdk_config_keys() -> None:
    args = parse_inference_kwargs(
        {
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "min_p": 0.05,
            "repeat_penalty": 1.1,
            "stop": "###",
        }
    )
    assert args.config == {
        "maxTokens": 64,
        "temperature": 0.2,
        "topPSampling": 0.9,
        "topKSampling": 40,
        "minPSampling": 0.05,
        "repeatPenalty": 1.1,
        "stopStrings": ["###"],
    }
    # and the SDK accepts the result as its own config struct, losing nothing
    assert lms.LlmPredictionConfig._from_any_dict(args.config).to_dict() == args.config


def test_empty_kwargs_send_no_config() -> None:
    args = parse_inference_kwargs({})
    assert args.config is None
    assert args.sdk_kwargs() == {}


def test_config_dict_accepts_camel_and_snake_case() -> None:
    args = parse_inference_kwargs({"config": {"top_k_sampling": 5, "maxTokens": 3}})
    assert args.config == {"topKSampling": 5, "maxTokens": 3}


def test_config_struct_is_accepted() -> None:
    args = parse_inference_kwargs({"config": lms.LlmPredictionConfig(temperature=0.5)})
    assert args.config == {"temperature": 0.5}


def test_unknown_config_key_is_refused_not_dropped() -> None:
    with pytest.raises(InvalidInferenceArgumentError, match=r"'tempreature'.*ignore them silently"):
        parse_inference_kwargs({"config": {"tempreature": 0.5}})


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"structured": {"type": "json", "jsonSchema": {}, "typo": 1}}, "['structured']['typo']"),
        ({"rawTools": {"type": "none", "typo": 1}}, "['rawTools']['typo']"),
        (
            {
                "promptTemplate": {
                    "type": "jinja",
                    "jinjaPromptTemplate": {"template": "x"},
                    "stopStrings": [],
                    "x": 2,
                }
            },
            "['promptTemplate']['x']",
        ),
    ],
)
def test_unknown_nested_config_keys_are_refused_not_dropped(
    config: dict[str, Any], named: str
) -> None:
    """Found by a probe: the SDK's structs drop unknown keys at any depth, silently."""
    with pytest.raises(InvalidInferenceArgumentError, match="drops them silently") as info:
        parse_inference_kwargs({"config": config})
    assert named in str(info.value)


TOOLS: Any = {
    "type": "toolArray",
    "tools": [
        {
            "type": "function",
            "function": {"name": "add", "parameters": {"type": "object", "properties": {}}},
        }
    ],
}


def test_tools_in_config_are_refused_since_their_calls_would_be_dropped() -> None:
    """Found by a probe: LM Studio ends the reply at the model's tool call, and every call
    returned the text before it as the answer, the call dropped without a word."""
    for config in (
        {"rawTools": TOOLS},
        {"raw_tools": TOOLS},
        lms.LlmPredictionConfig(raw_tools=TOOLS),
    ):
        with pytest.raises(InvalidInferenceArgumentError) as info:
            parse_inference_kwargs({"config": config})
        assert str(info.value).startswith("config['rawTools'] offers the model tools")
        assert "model.act(...)" in str(info.value)
    none = parse_inference_kwargs({"config": {"rawTools": {"type": "none"}}})
    assert none.config == {"rawTools": {"type": "none"}}
    empty = {"type": "toolArray", "tools": []}  # offers none: nothing to call (a review)
    assert parse_inference_kwargs({"config": {"rawTools": empty}}).config == {"rawTools": empty}
    forced = {"type": "toolArray", "tools": [], "force": True}  # a call forced (a probe)
    with pytest.raises(InvalidInferenceArgumentError, match="offers the model tools"):
        parse_inference_kwargs({"config": {"rawTools": forced}})


@pytest.mark.parametrize(
    "structured",
    [
        {"type": "none", "jsonSchema": {"type": "integer"}},  # was sent as free text
        {"type": "json", "jsonSchema": {"type": "integer"}, "gbnfGrammar": 'root ::= "a"'},
        {"type": "gbnf", "gbnfGrammar": 'root ::= "a"', "json_schema": {}},
    ],
)
def test_a_structured_body_its_type_does_not_read_is_refused(structured: dict[str, Any]) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match="does not read"):
        parse_inference_kwargs({"config": {"structured": structured}})


_STRUCTURED_KEPT = {"type": "json", "json_schema": {"type": "integer", "x-any": [1]}}
_REASONING_KEPT = {"enabled": True, "startString": "<a>", "endString": "</a>"}


@pytest.mark.parametrize(
    ("config", "sent"),
    [
        ({"structured": _STRUCTURED_KEPT}, {"structured": _STRUCTURED_KEPT}),
        (
            {"structured": {"type": "none", "jsonSchema": None}},
            {"structured": {"type": "none", "jsonSchema": None}},
        ),
        ({"reasoningParsing": _REASONING_KEPT}, {"reasoningParsing": _REASONING_KEPT}),
        ({"stop_strings": ["x"], "temperature": 0.5}, {"stopStrings": ["x"], "temperature": 0.5}),
    ],
)
def test_nested_config_the_sdk_keeps_whole_is_accepted(
    config: dict[str, Any], sent: dict[str, Any]
) -> None:
    """A nested setting the SDK takes as it is comes back whole (only top keys renamed)."""
    assert parse_inference_kwargs({"config": config}).config == sent


@pytest.mark.parametrize(
    ("config", "hint"),
    [
        ({"seed": 1}, r"'seed': LM Studio takes the seed when the model is loaded"),
        (
            {"top_p": 0.5},
            r"'top_p' is a keyword: pass top_p= to the call, or config\['topPSampling'\]",
        ),
        (
            {"stop": ["x"]},
            r"'stop' is a keyword: pass stop= to the call, or config\['stopStrings'\]",
        ),
    ],
)
def test_unknown_config_keys_known_elsewhere_say_where_they_go(
    config: dict[str, Any], hint: str
) -> None:
    """``config={"seed": 1}`` only said LM Studio would ignore it (found by a probe)."""
    with pytest.raises(InvalidInferenceArgumentError, match=hint):
        parse_inference_kwargs({"config": config})


def test_unknown_keyword_lists_accepted_ones() -> None:
    with pytest.raises(InvalidInferenceArgumentError) as info:
        parse_inference_kwargs({"temprature": 0.5})
    message = str(info.value)
    assert "temprature" in message
    for name in accepted_keywords():
        assert name in message


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("seed", "load"),
        ("response_format", "output type"),
        ("max_new_tokens", "max_tokens="),
        # found by mutation testing: the redirect's key could be lost unnoticed
        ("top_p_sampling", "top_p_sampling= is not accepted: use top_p="),
    ],
)
def test_keywords_from_other_backends_get_a_redirect(name: str, hint: str) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match=hint):
        parse_inference_kwargs({name: 1})


def test_config_raw_is_refused_with_what_to_do() -> None:
    """The SDK refuses ``raw`` in a prediction config (found by mutation testing: the
    refusal could be dropped unnoticed, and the config was then passed on)."""
    with pytest.raises(InvalidInferenceArgumentError) as info:
        parse_inference_kwargs({"config": {"raw": {"fields": []}}})
    assert str(info.value).startswith(
        "config['raw'] cannot be sent: the lmstudio SDK refuses it in a prediction config. "
        "Set each setting by its own key"
    )


def test_same_setting_given_twice_raises() -> None:
    with pytest.raises(InvalidInferenceArgumentError, match="both set"):
        parse_inference_kwargs({"max_tokens": 5, "config": {"maxTokens": 10}})
    with pytest.raises(InvalidInferenceArgumentError, match="twice"):
        parse_inference_kwargs({"config": {"maxTokens": 5, "max_tokens": 6}})


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_tokens": "10"}, InvalidInferenceArgumentError),
        ({"max_tokens": 1.5}, InvalidInferenceArgumentError),
        ({"max_tokens": True}, InvalidInferenceArgumentError),
        ({"max_tokens": 0}, InvalidInferenceValueError),
        ({"temperature": -1}, InvalidInferenceValueError),
        ({"temperature": float("nan")}, InvalidInferenceValueError),
        ({"top_p": 1.5}, InvalidInferenceValueError),
        ({"min_p": -0.1}, InvalidInferenceValueError),
        ({"repeat_penalty": 0}, InvalidInferenceValueError),
        ({"stop": ["a", 1]}, InvalidInferenceArgumentError),
        ({"stop": [""]}, InvalidInferenceValueError),
        ({"config": "fast"}, InvalidInferenceArgumentError),
        ({"config": {"temperature": "hot"}}, InvalidInferenceArgumentError),
        ({"preset": ""}, InvalidInferenceArgumentError),
        ({"model": 3}, InvalidInferenceArgumentError),
        ({"model": "  "}, InvalidInferenceArgumentError),
        ({"on_message": "print"}, InvalidInferenceArgumentError),
        ({"timeout": 0}, InvalidInferenceValueError),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_inference_kwargs(kwargs)


class _AsyncCallable:
    async def __call__(self, fragment: object) -> None:
        pass

    async def method(self, fragment: object) -> None:
        pass


async def _async_function(fragment: object) -> None:
    pass


@pytest.mark.parametrize(
    "callback",
    [
        _async_function,
        functools.partial(_async_function),
        _AsyncCallable(),
        _AsyncCallable().method,
    ],
    ids=["function", "partial", "callable object", "bound method"],
)
def test_async_callbacks_are_refused_in_every_form(callback: object) -> None:
    """The SDK calls callbacks without awaiting them: an async one would never run."""
    with pytest.raises(InvalidInferenceArgumentError, match="plain function"):
        parse_inference_kwargs({"on_prediction_fragment": callback})


def test_plain_callables_are_callbacks() -> None:
    plain = functools.partial(print, end="")
    assert parse_inference_kwargs({"on_message": plain}).callbacks == {"on_message": plain}


def test_errors_are_builtin_kinds() -> None:
    assert issubclass(InvalidInferenceArgumentError, TypeError)
    assert issubclass(InvalidInferenceValueError, ValueError)


def test_callbacks_preset_model_and_timeout_pass_through() -> None:
    def on_first_token() -> None:
        pass

    args = parse_inference_kwargs(
        {"on_first_token": on_first_token, "preset": "mine", "model": "m", "timeout": 2}
    )
    assert args.sdk_kwargs() == {"on_first_token": on_first_token, "preset": "mine"}
    assert args.model == "m"
    assert args.timeout == 2


# -- one checker for keywords and config= (issue 13) ------------------------------------


BAD_VALUES: list[tuple[str, object]] = [
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", 2**64 + 5),
    ("max_tokens", 1.5),
    ("max_tokens", True),
    ("max_tokens", "10"),
    ("temperature", -0.1),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", 10**400),
    ("top_p", 1.5),
    ("top_p", True),
    ("top_k", -2),
    ("top_k", 501),  # found by a probe: sent, beyond LM Studio's range (-1 to 500)
    ("top_k", 2**40),
    ("top_k", 2.5),
    ("top_k", True),
    ("min_p", float("-inf")),
    ("repeat_penalty", 0),
    ("stop", [""]),
    ("stop", ["a", 1]),
    ("stop", 5),
    ("reasoning_parsing", "on"),
    ("reasoning_parsing", {"enabled": 1}),
    ("reasoning_parsing", {"start_string": ""}),
    ("reasoning_parsing", {"enabled": True, "extra": 1}),
]


@pytest.mark.parametrize(
    ("name", "value"), BAD_VALUES, ids=[f"{n}={v!r:.20}" for n, v in BAD_VALUES]
)
def test_config_is_checked_exactly_like_the_keyword(name: str, value: object) -> None:
    key = SIMPLE_KWARGS[name]
    snake = next(
        f.name for f in msgspec.structs.fields(lms.LlmPredictionConfig) if f.encode_name == key
    )
    errors = []
    for kwargs in ({name: value}, {"config": {key: value}}, {"config": {snake: value}}):
        with pytest.raises((InvalidInferenceArgumentError, InvalidInferenceValueError)) as info:
            parse_inference_kwargs(kwargs)
        errors.append(info.value)
    assert len({type(e) for e in errors}) == 1, errors
    # the same words after the label (`max_tokens=` / `config['maxTokens']`)
    tails = {
        str(e).split(" ", 1)[1] if str(e).startswith(("config[", name)) else str(e) for e in errors
    }
    assert len(tails) == 1, tails


def test_every_keyword_is_a_checked_setting() -> None:
    assert set(SIMPLE_KWARGS.values()) <= set(SETTINGS)
    assert "reasoning_parsing" in SIMPLE_KWARGS


def test_off_values_the_sdk_documents_are_kept() -> None:
    args = parse_inference_kwargs({"max_tokens": False, "config": {"topPSampling": False}})
    assert args.config == {"maxTokens": False, "topPSampling": False}


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (True, {"enabled": True, "startString": "<think>", "endString": "</think>"}),
        (False, {"enabled": False, "startString": "<think>", "endString": "</think>"}),
        (
            {"start_string": "<r>", "endString": "</r>"},
            {"enabled": True, "startString": "<r>", "endString": "</r>"},
        ),
    ],
)
def test_reasoning_parsing_forms(value: object, sent: dict[str, Any]) -> None:
    for kwargs in ({"reasoning_parsing": value}, {"config": {"reasoningParsing": value}}):
        args = parse_inference_kwargs(kwargs)
        assert args.config == {"reasoningParsing": sent}
        config = lms.LlmPredictionConfig._from_any_dict(args.config)
        assert config.reasoning_parsing is not None
        assert config.reasoning_parsing.start_string == sent["startString"]


def test_reasoning_parsing_struct_is_accepted() -> None:
    struct = lms.LlmPredictionConfig._from_any_dict(
        {"reasoningParsing": {"enabled": True, "startString": "<a>", "endString": "</a>"}}
    )
    args = parse_inference_kwargs({"config": struct})
    assert args.config == {
        "reasoningParsing": {"enabled": True, "startString": "<a>", "endString": "</a>"}
    }


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, 0, -1, MAX_SECONDS * 2])
def test_seconds_out_of_range(value: object) -> None:
    with pytest.raises(InvalidInferenceValueError, match="timeout"):
        check_seconds("timeout", value)


def test_seconds_kinds() -> None:
    assert check_seconds("timeout", None) is None
    assert check_seconds("timeout", 2) == 2.0
    with pytest.raises(InvalidInferenceArgumentError):
        check_seconds("timeout", "2")
    with pytest.raises(InvalidInferenceArgumentError):
        check_seconds("timeout", True)


def test_str_subclasses_become_str() -> None:
    from markupsafe import Markup

    args = parse_inference_kwargs(
        {"stop": Markup("x"), "model": Markup("m"), "preset": Markup("p")}
    )
    assert args.config is not None
    assert [type(s) for s in args.config["stopStrings"]] == [str]
    assert type(args.model) is str
    assert type(args.preset) is str


def test_reasoning_tags_for_the_splitter() -> None:
    assert parse_inference_kwargs({}).reasoning_tags() == ("<think>", "</think>")
    assert parse_inference_kwargs({"reasoning_parsing": False}).reasoning_tags() == (
        "<think>",
        "</think>",
    )
    custom = {"start_string": "[r]", "end_string": "[/r]"}
    assert parse_inference_kwargs({"reasoning_parsing": custom}).reasoning_tags() == ("[r]", "[/r]")
    assert parse_inference_kwargs({"config": {"reasoningParsing": custom}}).reasoning_tags() == (
        "[r]",
        "[/r]",
    )
    # With parsing off LM Studio sends the model's own tags as text: the splitter looks
    # for those (they were once replaced by <think>, and [r]...[/r] stayed in the answer).
    off = {**custom, "enabled": False}
    assert parse_inference_kwargs({"reasoning_parsing": off}).reasoning_tags() == ("[r]", "[/r]")
    blank = {"enabled": False, "start_string": "", "end_string": " "}
    assert parse_inference_kwargs({"reasoning_parsing": blank}).reasoning_tags() == (
        "<think>",
        "</think>",
    )


def test_numpy_and_fraction_numbers_are_numbers() -> None:
    """NumPy scalars and ``Fraction`` are real numbers: taken, and sent as Python's own."""
    args = parse_inference_kwargs(
        {
            "max_tokens": np.int64(64),
            "temperature": np.float32(0.5),
            "top_k": np.uint8(40),
            "top_p": Fraction(9, 10),
            "timeout": np.int32(30),
        }
    )
    config = args.sdk_kwargs()["config"]
    sent = {key: (value, type(value)) for key, value in config.items()}
    assert sent == {
        "maxTokens": (64, int),
        "temperature": (0.5, float),
        "topKSampling": (40, int),
        "topPSampling": (0.9, float),
    }
    assert (args.timeout, type(args.timeout)) == (30.0, float)
    msgspec.json.encode(config)  # what the SDK does with it: no numpy type left
    limit, retries = check_concurrency(np.int64(8)), check_retries(np.int16(2))
    assert (limit, type(limit), retries, type(retries)) == (8, int, 2, int)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_tokens": np.float64(64.0)}, InvalidInferenceArgumentError),
        ({"max_tokens": np.True_}, InvalidInferenceArgumentError),
        ({"max_tokens": np.int64(0)}, InvalidInferenceValueError),
        ({"temperature": np.float32("nan")}, InvalidInferenceValueError),
        ({"timeout": Decimal("1.5")}, InvalidInferenceArgumentError),
        ({"timeout": np.float64("inf")}, InvalidInferenceValueError),
        # found by a probe: a raw OverflowError (float() of the Fraction), nothing a
        # `except ValueError` caught, where the int 10**400 was refused as not finite
        ({"temperature": Fraction(10**400)}, InvalidInferenceValueError),
        ({"top_p": Fraction(-(10**400))}, InvalidInferenceValueError),
        ({"top_k": Fraction(10**400)}, InvalidInferenceValueError),
        ({"timeout": Fraction(10**400, 3)}, InvalidInferenceValueError),
    ],
)
def test_numpy_numbers_are_checked_like_python_numbers(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        parse_inference_kwargs(kwargs)


@pytest.mark.parametrize("value", [np.float64(4.0), np.True_, True, "4"])
def test_concurrency_and_retries_must_be_ints(value: object) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match="max_concurrency"):
        check_concurrency(value)
    with pytest.raises(InvalidInferenceArgumentError, match="retries"):
        check_retries(value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tokens": -1},
        {"config": {"maxTokens": -1}},
        {"config": {"max_tokens": -1}},
        {"max_tokens": np.int64(-1)},  # a NumPy scalar was refused (found by a review)
    ],
)
def test_max_tokens_minus_one_is_no_limit_as_in_lm_studio(kwargs: dict[str, Any]) -> None:
    """-1 is "no limit" in LM Studio's own schema (lmstudio-js: an int from -1, or false),
    and the SDK by hand sends it; it was refused, saying it meant no limit only in other
    APIs (found by a probe). It is sent as False, the SDK's form."""
    assert parse_inference_kwargs(kwargs).config == {"maxTokens": False}
    assert parse_inference_kwargs({"max_tokens": False}).config == {"maxTokens": False}
    for wrong in (-2, 0):
        with pytest.raises(InvalidInferenceValueError, match="must be at least 1"):
            parse_inference_kwargs({"max_tokens": wrong})


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("temperature", "temperature"),
        ("top_p", "topPSampling"),
        ("min_p", "minPSampling"),
        ("repeat_penalty", "repeatPenalty"),
    ],
)
def test_float_subclasses_are_sent_as_python_floats(name: str, key: str) -> None:
    # np.float64 is a float subclass: it passed the checks as it was, then the SDK's
    # encoder refused it (a raw TypeError or msgspec error once the model was looked up).
    for given in ({name: np.float64(0.5)}, {"config": {key: np.float64(0.5)}}):
        config = parse_inference_kwargs(given).sdk_kwargs()["config"]
        assert (config[key], type(config[key])) == (0.5, float)
        msgspec.json.encode(config)


def test_a_config_key_set_to_none_is_unset() -> None:
    """None sends nothing, so it neither clashes with a keyword nor with an output type."""
    args = parse_inference_kwargs({"temperature": 0.5, "config": {"temperature": None}})
    assert args.config == {"temperature": 0.5}
    assert (
        parse_inference_kwargs({"config": {"maxTokens": None, "structured": None}}).config is None
    )


def test_a_large_int_is_the_float_it_means_where_a_setting_is_not_a_count() -> None:
    assert parse_inference_kwargs({"temperature": 3_000_000_000}).config == {"temperature": 3e9}
    assert parse_inference_kwargs({"temperature": 3e9}).config == {"temperature": 3e9}
    with pytest.raises(InvalidInferenceValueError, match="finite"):
        parse_inference_kwargs({"temperature": 10**400})
    with pytest.raises(InvalidInferenceValueError, match="larger than 2,147,483,647"):
        parse_inference_kwargs({"max_tokens": 3_000_000_000})  # a count stays bounded


class _Progress:
    def __call__(self, progress: float) -> None:
        pass

    def method(self, progress: float) -> None:
        pass


@pytest.mark.parametrize(
    "callback",
    [
        lambda progress: None,
        lambda *args: None,
        lambda progress, extra=1: None,
        _Progress(),
        _Progress().method,
        functools.partial(lambda tag, progress: None, "tag"),
    ],
    ids=["one argument", "varargs", "a default", "callable object", "bound method", "partial"],
)
def test_callbacks_that_take_what_the_sdk_passes_are_accepted(callback: Any) -> None:
    args = parse_inference_kwargs({"on_prompt_processing_progress": callback})
    assert args.callbacks == {"on_prompt_processing_progress": callback}


@pytest.mark.parametrize(
    ("name", "callback", "takes"),
    [
        ("on_first_token", lambda token: None, "no arguments"),
        ("on_message", lambda: None, "one argument"),
        ("on_prediction_fragment", lambda fragment, extra: None, "one argument"),
        ("on_prompt_processing_progress", _Progress, "one argument"),  # the class itself
    ],
)
def test_callbacks_the_sdk_cannot_call_are_refused(name: str, callback: Any, takes: str) -> None:
    """The SDK only logs what most callbacks raise: a wrong one would silently never run."""
    called = f"{name}= is called .* {takes}"
    with pytest.raises(InvalidInferenceArgumentError, match=called) as info:
        parse_inference_kwargs({name: callback})
    assert " at 0x" not in str(info.value)  # named, not by its address (found by a probe)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"contextOverflowPolicy": "drop"},
            "config['contextOverflowPolicy'] must be one of 'rollingWindow', 'stopAtLimit', "
            "'truncateMiddle', got 'drop'.",
        ),
        (
            {"structured": {"type": "xml"}},
            "config['structured']['type'] must be one of 'gbnf', 'json', 'none', got 'xml'.",
        ),
        (
            {"promptTemplate": 5},
            "Invalid value in config=: config['promptTemplate']: Expected `object | null`, got "
            "`int`.",
        ),
    ],
)
def test_a_config_value_the_sdk_refuses_names_its_key_and_choices(
    config: dict[str, Any], message: str
) -> None:
    """Found by a probe: msgspec's "Invalid enum value 'drop' - at `$.contextOverflowPolicy`",
    with no list of the valid values, unlike every other config check."""
    with pytest.raises(InvalidInferenceArgumentError) as info:
        parse_inference_kwargs({"config": config})
    assert str(info.value) == message


def test_a_mock_callback_is_taken() -> None:
    """Found by a review: Python 3.11's coroutine check failed on ``Mock(spec=f)``."""
    from unittest import mock

    def on_fragment(fragment: object) -> None: ...

    callback = mock.Mock(spec=on_fragment)
    taken = parse_inference_kwargs({"on_prediction_fragment": callback})
    assert taken.callbacks == {"on_prediction_fragment": callback}


def test_the_adapter_takes_only_bools_as_flags() -> None:
    with pytest.raises(InvalidInferenceArgumentError, match="grammar must be True or False"):
        LMStudioTypeAdapter(grammar="no")  # type: ignore[arg-type]
    with pytest.raises(InvalidInferenceArgumentError, match="strict_schema must be True"):
        LMStudioTypeAdapter(strict_schema=1)  # type: ignore[arg-type]
    assert LMStudioTypeAdapter(grammar=True, strict_schema=True).grammar is True


def test_the_adapter_checks_its_settings_when_they_are_assigned() -> None:
    """Found by a probe: only its constructor checked them, though the model's own error
    sends users to ``model.type_adapter.grammar = True``: ``grammar = "no"`` turned grammar
    mode on, and a misspelt setting was stored and did nothing."""
    from outlines_lmstudio.errors import UnknownSettingError

    adapter = LMStudioTypeAdapter()
    with pytest.raises(InvalidInferenceArgumentError, match="grammar must be True or False"):
        adapter.grammar = "no"  # type: ignore[assignment]
    assert adapter.grammar is False
    with pytest.raises(UnknownSettingError, match="Did you mean strict_schema") as info:
        adapter.strict_schma = True  # type: ignore[attr-defined]
    assert isinstance(info.value, AttributeError)
    assert info.value.name == "strict_schma"
    assert not hasattr(adapter, "strict_schma")
    adapter.strict_schema = True
    assert adapter.plan_output(int).response_format is not None
    with pytest.raises(InvalidInferenceArgumentError, match="cannot be deleted: assign it"):
        del adapter.grammar  # a review: the next call failed on an AttributeError
    assert adapter.grammar is False

    class Counting(LMStudioTypeAdapter):  # a user's subclass keeps state of its own
        def __init__(self) -> None:
            super().__init__(grammar=True)
            self.calls = 0

    assert Counting().calls == 0


def test_a_wrapper_is_checked_by_its_own_signature() -> None:
    """Found by a review: the check followed ``functools.wraps`` to the wrapped function, and
    refused a wrapper that supplies its first argument."""
    seen: list[object] = []

    def log(prefix: str, fragment: object) -> None:
        seen.append((prefix, fragment))

    @functools.wraps(log)
    def wrapper(*args: object) -> None:
        log("fragment", *args)

    args = parse_inference_kwargs({"on_prediction_fragment": wrapper})
    assert args.callbacks == {"on_prediction_fragment": wrapper}


@pytest.mark.parametrize(
    ("given", "sent"), [(0, 0), (-1, -1), (500, 500), (20.0, 20), (np.float32(3.0), 3)]
)
def test_top_k_takes_lm_studios_range_and_whole_floats(given: object, sent: int) -> None:
    """LM Studio's schema takes -1 to 500 (0 and -1: top-k off; found by a probe: 0 was
    refused, 501 sent); the SDK types the key as a float and gives back ``20.0`` in a
    prediction's config, which was refused when passed back."""
    for kwargs in ({"top_k": given}, {"config": {"topKSampling": given}}):
        config = parse_inference_kwargs(kwargs).config
        assert config == {"topKSampling": sent}
        assert type(config["topKSampling"]) is int
    returned = lms.LlmPredictionConfig(top_k_sampling=20.0)
    assert parse_inference_kwargs({"config": returned}).config == {"topKSampling": 20}


def test_a_huge_top_k_is_told_the_range() -> None:
    """``10**400`` said "must be a finite number" (found by a review)."""
    with pytest.raises(InvalidInferenceValueError, match="must be between -1 and 500"):
        parse_inference_kwargs({"top_k": 10**400})


@pytest.mark.parametrize(
    ("key", "camel"), [("contextLength", "contextLength"), ("flash_attention", "flashAttention")]
)
def test_a_load_setting_in_config_says_to_load_an_instance(key: str, camel: str) -> None:
    """``config={"contextLength": 8192}`` was only an unknown key (found by a probe)."""
    with pytest.raises(InvalidInferenceArgumentError) as info:
        parse_inference_kwargs({"config": {key: 1}})
    message = str(info.value)
    assert f"{key!r} is a load setting" in message
    assert f"load_new_instance(key, 'mine', config={{{camel!r}: ...}}, ttl=None)" in message
    assert "'raw'" not in message.split("Valid keys:")[1]  # listed, then refused


def test_unknown_config_keys_are_quoted_shortened() -> None:
    """A 1 MB key was quoted whole, where other bad values are shortened (a probe)."""
    keys = {"S" * 1_000_000: 1, **{f"unknown{i}": i for i in range(12)}}
    with pytest.raises(InvalidInferenceArgumentError, match=r"and 3 more") as info:
        parse_inference_kwargs({"config": keys})
    assert len(str(info.value)) < 2_000


def test_a_prompt_template_s_stop_strings_are_checked_and_read() -> None:
    """Found by a probe: ``config={"promptTemplate": {..., "stopStrings": [""]}}`` was sent
    where ``stop=[""]`` is refused, and a number cut by such a stop string was returned by
    ``parse`` as valid (its check read only the call's own stop strings)."""
    template = {
        "type": "jinja",
        "jinjaPromptTemplate": {"template": "{{ messages }}"},
        "stopStrings": ["3"],
    }
    args = parse_inference_kwargs({"config": {"promptTemplate": template}, "stop": ["."]})
    assert args.stop_strings() == (".", "3")
    empty = {**template, "stopStrings": [""]}
    with pytest.raises(InvalidInferenceValueError, match=r"\['stopStrings'\]: stop strings"):
        parse_inference_kwargs({"config": {"promptTemplate": empty}})


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "config['draftModel'] must be a non-empty model key string, got ''"),
        (" qwen", "config['draftModel'] ' qwen' has whitespace around it"),
    ],
)
def test_the_draft_model_is_checked_as_model_is(value: str, needle: str) -> None:
    """Found by a probe: both were sent (and failed late), where ``model=`` refuses them."""
    for key in ("draftModel", "draft_model"):
        with pytest.raises(InvalidInferenceArgumentError) as info:
            parse_inference_kwargs({"config": {key: value}})
        assert str(info.value).startswith(needle)
    assert parse_inference_kwargs({"config": {"draft_model": "q"}}).config == {"draftModel": "q"}


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"tempreature": 0.5}, "Unknown keyword argument tempreature=. Did you mean temperature=?"),
        ({"max_token": 5}, "Did you mean max_tokens=?"),
        (
            {"maxTokens": 5},
            "maxTokens is LM Studio's key: pass max_tokens=, or config={'maxTokens'",
        ),
        ({"config": {"temprature": 0.5}}, "'temprature': Did you mean temperature?"),
    ],
)
def test_a_misspelt_setting_is_named_with_its_likely_spelling(
    kwargs: dict[str, Any], said: str
) -> None:
    """Found by a probe: only an attribute got "Did you mean"; a call's keyword, a config key
    and an option got the whole list, and the SDK's camelCase keyword no pointer."""
    with pytest.raises(InvalidInferenceArgumentError) as refused:
        parse_inference_kwargs(kwargs)
    assert said in str(refused.value)
