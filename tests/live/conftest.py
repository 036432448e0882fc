"""Live tests: the library against a real LM Studio. Run with LMSTUDIO_HOST set."""

import os
from collections.abc import Iterator

import lmstudio as lms
import pytest

HOST = os.environ.get("LMSTUDIO_HOST")
SKIP_REASON = (
    "needs a real LM Studio: start its server and run "
    "`LMSTUDIO_HOST=localhost:1234 bash scripts/check -m lmstudio_live` "
    "(LMSTUDIO_MODEL picks the model, LMSTUDIO_VISION_MODEL a vision model)"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/live" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.lmstudio_live)
            if not HOST:
                item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


@pytest.fixture
def live_client() -> Iterator[lms.Client]:
    assert HOST is not None
    with lms.Client(HOST) as client:
        yield client


@pytest.fixture
def live_model_name() -> str | None:
    return os.environ.get("LMSTUDIO_MODEL") or None
