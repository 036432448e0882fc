"""The SDK's module-level convenience API (a global default client)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import lmstudio as lms
import outlines
import pytest
from lmstudio import sync_api
from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import EMBED, PNG, TEXT, VISION


@pytest.fixture
def default_client(emu: LMStudioEmulator) -> Iterator[LMStudioEmulator]:
    # `_reset_default_client` is the SDK's own hook for test suites: it closes
    # the global client and forgets the configured host.
    sync_api._reset_default_client()
    lms.configure_default_client(emu.api_host)
    yield emu
    sync_api._reset_default_client()


def test_module_level_api(default_client: LMStudioEmulator) -> None:
    emu = default_client
    model = lms.llm(TEXT)
    assert model.respond("hi").content == emu.predictions[-1].text
    assert lms.llm().identifier == TEXT
    assert len(lms.embedding_model(EMBED).embed("x")) == 768
    assert {m.model_key for m in lms.list_downloaded_models()} >= {TEXT, EMBED}
    assert {m.identifier for m in lms.list_loaded_models("llm")} >= {TEXT, VISION}
    handle = lms.prepare_image(PNG)
    assert emu.uploads[-1].identifier == handle.identifier


def test_outlines_own_model_describes_an_image(default_client: LMStudioEmulator) -> None:
    # Outlines' built-in LM Studio model uploads with the SDK's default client
    # (`lms.prepare_image`) and predicts with the user's: a test of code written for it runs
    # here as against LM Studio (found by a probe running Outlines' tests: "File not found").
    emu = default_client
    image = Image(PILImage.open(io.BytesIO(PNG)))
    with lms.Client(emu.api_host) as client:
        model = outlines.models.lmstudio.LMStudio(client, VISION)
        assert model(["What is this?", image]) == emu.predictions[-1].text
    assert emu.predictions[-1].images
    assert emu.predictions[-1].last_user_text == "What is this?"


def test_get_default_client_with_host(emu: LMStudioEmulator) -> None:
    sync_api._reset_default_client()
    try:
        client = lms.get_default_client(emu.api_host)
        assert client is lms.get_default_client()
        assert client.llm.model(TEXT).respond("hi").content
    finally:
        sync_api._reset_default_client()


def test_greeting_probe(emu: LMStudioEmulator) -> None:
    assert lms.Client.is_valid_api_host(emu.api_host)
    import httpx

    response = httpx.get(f"http://{emu.api_host}/lmstudio-greeting")
    assert response.status_code == 200
    assert response.json() == {"lmstudio": True}
    # One Content-Type, JSON's (found by a probe: a second, text/plain, came first).
    assert response.headers.get_list("content-type") == ["application/json"]
    assert httpx.get(f"http://{emu.api_host}/elsewhere").status_code == 404
