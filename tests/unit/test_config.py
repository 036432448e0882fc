from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio._config import accepted_keywords, parse_inference_kwargs
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
    ],
)
def test_keywords_from_other_backends_get_a_redirect(name: str, hint: str) -> None:
    with pytest.raises(InvalidInferenceArgumentError, match=hint):
        parse_inference_kwargs({name: 1})


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
