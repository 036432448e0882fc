"""docs/troubleshooting.md: each error on the page is produced here and compared with its text.

Each ``## heading`` of the page has one ```` ```text ```` block: ``ErrorClass: message``.
A producer below makes that error happen (against the emulator, the real SDK over
loopback) and the message must equal the page's, with the emulator's host shown as
``localhost:1234``. ``pytest --update-examples`` rewrites the page's blocks instead.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import lmstudio as lms
import pytest
from outlines.inputs import Image
from PIL import Image as PILImage

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio._discovery import no_server_error
from outlines_lmstudio.testing import LMStudioEmulator, Prediction

from .pages import ROOT

PAGE = ROOT / "docs" / "troubleshooting.md"
KEY = "qwen2.5-7b-instruct"
_SECTION = re.compile(r"^## (?P<title>.+?)\n(?P<body>.*?)(?=^## |\Z)", re.M | re.S)
_MESSAGE = re.compile(r"^```text\n(?P<text>.*?)\n```", re.M | re.S)
_HOST = re.compile(r"\b(?:127\.0\.0\.1|localhost):\d+\b")


def page_messages(text: str) -> dict[str, str]:
    """Return each section's title and the text of its message block."""
    found = {}
    for section in _SECTION.finditer(text):
        message = _MESSAGE.search(section["body"])
        if message:
            found[section["title"]] = message["text"]
    return found


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[LMStudioEmulator]:
    with LMStudioEmulator(token_latency=0.2) as emulator:
        yield emulator


def _error(call: Callable[[], object]) -> str:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the message is what is checked
        call()
    return f"{type(caught.value).__name__}: {caught.value}"


def no_server(emulator: LMStudioEmulator, client: lms.Client) -> str:
    # The same error, end to end in a private network: tests/e2e/test_discovery.py.
    error = no_server_error(KEY)
    return f"{type(error).__name__}: {error}"


def nothing_at_host(emulator: LMStudioEmulator, client: lms.Client) -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    other = lms.Client(f"localhost:{port}")
    try:
        return _error(lambda: from_lmstudio(other, KEY)("Hi"))
    finally:
        other.close()


def no_model_loaded(emulator: LMStudioEmulator, client: lms.Client) -> str:
    for loaded in client.llm.list_loaded():
        emulator.unload(loaded.identifier)
    return _error(lambda: from_lmstudio(client)("Hi"))


def wrong_key(emulator: LMStudioEmulator, client: lms.Client) -> str:
    return _error(lambda: from_lmstudio(client, "qwen2.5-7b-instrut")("Hi"))


def image_without_vision(emulator: LMStudioEmulator, client: lms.Client) -> str:
    PILImage.new("RGB", (8, 8), "red").save("photo.png")  # in the test's tmp_path
    image = Image(PILImage.open("photo.png"))
    return _error(lambda: from_lmstudio(client, KEY)(["Describe the image", image]))


def keeps_unloading(emulator: LMStudioEmulator, client: lms.Client) -> str:
    def unloading(prediction: Prediction) -> str:
        emulator.unload(prediction.model)  # as JIT auto-evict does, loading another model
        return "never seen"

    emulator.script(KEY, unloading)
    return _error(lambda: from_lmstudio(client, KEY)("Hi"))


def refused_schema(emulator: LMStudioEmulator, client: lms.Client) -> str:
    schema = {"type": "object", "properties": {"a": {"type": "strng"}}}
    return _error(lambda: from_lmstudio(client, KEY)("Hi", schema))


def timeout(emulator: LMStudioEmulator, client: lms.Client) -> str:
    model = from_lmstudio(client, KEY, timeout=0.5)
    return _error(lambda: model("Tell me a story", max_tokens=50))  # 50 x 0.2 s: 10 s


PRODUCERS: dict[str, Callable[[LMStudioEmulator, lms.Client], str]] = {
    "No LM Studio server": no_server,
    "Nothing at the host you gave": nothing_at_host,
    "No model loaded": no_model_loaded,
    "Wrong model key": wrong_key,
    "An image sent to a model without vision": image_without_vision,
    "A model that keeps being unloaded": keeps_unloading,
    "A schema that is refused": refused_schema,
    "A timeout": timeout,
}


def test_every_error_on_the_page_is_produced_here() -> None:
    assert set(page_messages(PAGE.read_text("utf-8"))) == set(PRODUCERS)


@pytest.mark.parametrize("title", list(PRODUCERS))
def test_the_page_shows_the_real_message(
    title: str,
    slow_emulator: LMStudioEmulator,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    slow_emulator.reset()
    with lms.Client(slow_emulator.api_host) as client:
        real = _HOST.sub("localhost:1234", PRODUCERS[title](slow_emulator, client))
    text = PAGE.read_text("utf-8")
    shown = page_messages(text)[title]
    if request.config.getoption("update_examples"):
        PAGE.write_text(text.replace(f"```text\n{shown}\n```", f"```text\n{real}\n```"), "utf-8")
        return
    assert real == shown


def test_the_reliability_page_counts_the_bad_input_table() -> None:
    """docs/reliability.md says how many cases the bad-input table holds: the count is kept."""
    import re
    from pathlib import Path

    from tests.e2e.test_bad_input import CASES

    page = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    match = re.search(r"`tests/e2e/test_bad_input\.py` holds (\d+) cases", page)
    assert match is not None
    assert int(match.group(1)) == len(CASES)
