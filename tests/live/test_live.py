"""The core features against a real LM Studio (skipped unless LMSTUDIO_HOST is set)."""

import io
import os
from typing import Literal

import lmstudio as lms
import outlines
import pydantic
import pytest
from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio import InvalidInferenceArgumentError, from_lmstudio


class Person(pydantic.BaseModel):
    name: str
    age: int


def test_structured_generation(live_client: lms.Client, live_model_name: str | None) -> None:
    model = from_lmstudio(live_client, live_model_name)
    text = str(outlines.Generator(model, Person)("Extract: John is 32", max_tokens=200))
    Person.model_validate_json(text)
    assert model.parse("Extract: Mary is 40", Person, retries=1, max_tokens=200).age >= 0


def test_simple_type_and_stream(live_client: lms.Client, live_model_name: str | None) -> None:
    model = from_lmstudio(live_client, live_model_name)
    assert model("Is 'I love it' positive?", Literal["yes", "no"]) in ("yes", "no")
    chunks = list(model.stream("Count to three.", max_tokens=30))
    assert "".join(chunks)


def test_batch_and_bad_kwargs(live_client: lms.Client, live_model_name: str | None) -> None:
    model = from_lmstudio(live_client, live_model_name)
    assert len(model.batch(["Say hi.", "Say bye."], max_tokens=10)) == 2
    with pytest.raises(InvalidInferenceArgumentError):
        model("hi", tempreature=0.1)


def test_false_turns_a_setting_off(live_client: lms.Client, live_model_name: str | None) -> None:
    """The Python SDK sends ``False`` as ``{"checked": true, "value": false}``; LM Studio's
    shared config schema wants a number there (docs/models.md). Unchecked without this."""
    model = from_lmstudio(live_client, live_model_name)
    assert model("Say hi.", max_tokens=False, stop=["\n"]) is not None
    assert model("Say hi.", top_p=False, max_tokens=10) is not None
    # Accepted is not applied: a lenient server could drop the field it cannot read and use
    # its default. The config LM Studio says it used (the SDK's result) must hold no number
    # for it: off as sent (False), or unchecked (which the SDK reads as no value, None).
    handle = live_client.llm.model(live_model_name) if live_model_name else live_client.llm.model()
    used = handle.respond("Say hi.", config={"topPSampling": False, "maxTokens": 10})
    top_p = used.prediction_config.top_p_sampling
    assert top_p is False or top_p is None, used.prediction_config


@pytest.mark.skipif(
    not os.environ.get("LMSTUDIO_VISION_MODEL"),
    reason="set LMSTUDIO_VISION_MODEL to a vision model key",
)
def test_image(live_client: lms.Client) -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    image = Image(PILImage.open(io.BytesIO(buffer.getvalue())))
    model = from_lmstudio(live_client, os.environ["LMSTUDIO_VISION_MODEL"])
    assert model(["What colour is this square? One word.", image], max_tokens=10)
