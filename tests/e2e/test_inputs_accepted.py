"""Inputs that used to fail after the socket was open, or were refused wrongly (issue 13).

Each is sent through the real SDK to the emulator and checked on the wire, on both fronts.
"""

import base64
import io

import pytest
from markupsafe import Markup
from outlines.inputs import Chat, Image
from PIL import Image as PILImage

from outlines_lmstudio._images import IMAGES
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL, MakeModel
from .helpers import message_texts


def test_str_subclasses_are_sent_as_plain_text(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    model = make_model(TEXT_MODEL)
    model(Markup("<b>Hi</b>"), stop=[Markup("###")], model=Markup(TEXT_MODEL), max_tokens=3)
    prediction = emulator.predictions[-1]
    assert message_texts(prediction.messages) == [("user", "<b>Hi</b>")]
    assert prediction.model == TEXT_MODEL
    model(
        Chat(
            [
                {"role": "system", "content": Markup("Be brief.")},
                {"role": "user", "content": [Markup("Describe")]},
                {"role": "assistant", "content": Markup("Done.")},
                {"role": "user", "content": Markup("Again")},
            ]
        ),
        config={"stopStrings": [Markup("END")]},
        max_tokens=3,
    )
    assert message_texts(emulator.predictions[-1].messages) == [
        ("system", "Be brief."),
        ("user", "Describe"),
        ("assistant", "Done."),
        ("user", "Again"),
    ]


def test_reasoning_parsing_reaches_the_server(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    model = make_model(TEXT_MODEL)
    model("Hi", max_tokens=3, reasoning_parsing={"start_string": "<t>", "end_string": "</t>"})
    model("Hi", max_tokens=3, config={"reasoningParsing": False})
    sent = [
        f["value"]
        for r in emulator.requests
        if r.endpoint == "predict"
        for layer in r.parameter["predictionConfigStack"]["layers"]
        for f in layer["config"]["fields"]
        if f["key"] == "llm.prediction.reasoning.parsing"
    ]
    assert sent == [
        {"enabled": True, "startString": "<t>", "endString": "</t>"},
        {"enabled": False, "startString": "<think>", "endString": "</think>"},
    ]


def mpo_image() -> tuple[Image, bytes]:
    """A phone-style MPO: a primary JPEG and a second (preview) image."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 48), "red").save(
        buffer, format="MPO", save_all=True, append_images=[PILImage.new("RGB", (32, 24), "blue")]
    )
    data = buffer.getvalue()
    return Image(PILImage.open(io.BytesIO(data))), data


def test_mpo_still_is_sent_as_jpeg(make_model: MakeModel, emulator: LMStudioEmulator) -> None:
    image, _ = mpo_image()
    model = make_model(VISION_MODEL)
    model(["Describe", image], max_tokens=3)
    (sent,) = emulator.predictions[-1].images
    with PILImage.open(io.BytesIO(sent)) as decoded:
        assert decoded.format in ("JPEG", "MPO")
        assert decoded.size == (64, 48)
        assert decoded.convert("RGB").getpixel((10, 10)) == (254, 0, 0)  # the red primary image
    assert emulator.uploads[-1].name.endswith(".jpeg")


@pytest.mark.parametrize("mode", ["LA", "RGBA", "PA", "CMYK", "I;16"])
def test_pil_modes_are_converted_not_refused(
    make_model: MakeModel, emulator: LMStudioEmulator, mode: str
) -> None:
    picture = PILImage.new("RGBA", (16, 12), (200, 10, 10, 128)).convert(
        "RGBA" if mode == "PA" else mode
    )
    if mode == "PA":
        picture = picture.convert("RGB").convert("P").convert("PA")
    picture.format = "JPEG" if mode in ("LA", "RGBA") else None  # alpha data labelled JPEG
    model = make_model(VISION_MODEL)
    model(["Describe", picture], max_tokens=3)
    (sent,) = emulator.predictions[-1].images
    with PILImage.open(io.BytesIO(sent)) as decoded:
        assert decoded.size == (16, 12)
        if mode in ("LA", "RGBA"):
            assert decoded.format == "PNG"
            assert decoded.mode == mode  # the alpha channel is kept


def test_reused_image_is_normalised_once_and_uploaded_once(
    make_model: MakeModel, emulator: LMStudioEmulator
) -> None:
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), "green").save(buffer, format="JPEG")
    image = Image(PILImage.open(io.BytesIO(buffer.getvalue())))
    model = make_model(VISION_MODEL)
    model(["One", image], max_tokens=2)
    first = IMAGES.get(image, (image.image_str, image.image))
    assert first is not None
    model(["Two", image], max_tokens=2)
    assert IMAGES.get(image, (image.image_str, image.image)) is first
    assert len(emulator.uploads) == 1
    # A changed image is a new image: new bytes, a new upload.
    buffer = io.BytesIO()
    PILImage.new("RGB", (40, 30), "navy").save(buffer, format="PNG")
    image.image = PILImage.open(io.BytesIO(buffer.getvalue()))
    image.image_str = base64.b64encode(buffer.getvalue()).decode()
    model(["Three", image], max_tokens=2)
    assert len(emulator.uploads) == 2
    assert emulator.predictions[-1].images == [buffer.getvalue()]
