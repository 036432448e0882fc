"""Live tests: the library against a real LM Studio. Run with LMSTUDIO_HOST set."""

import os
from collections.abc import Iterator

import lmstudio as lms
import pytest

from outlines_lmstudio._discovery import NOT_LM_STUDIO, is_lm_studio, why_not_lm_studio
from outlines_lmstudio.cli._common import CliError, _check_host, _normalise_host

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


def live_host(given: str) -> str:
    """``LMSTUDIO_HOST`` as the SDK takes it (``HOST:PORT``), once it is known to answer.

    The spellings the CLI and the demo accept (``http://HOST:PORT``) are accepted here too.

    Raises
    ------
    ValueError
        When the value is not ``HOST:PORT``, nothing answers there, or another server does:
        said once, in the words the CLI uses, not as the SDK's "not reachable" per test.
    """
    try:
        host = _normalise_host(given, "LMSTUDIO_HOST")
        _check_host(host, "LMSTUDIO_HOST", given)
    except CliError as exc:
        raise ValueError(str(exc)) from None
    try:
        answering = is_lm_studio(host)
    except NOT_LM_STUDIO as exc:
        raise ValueError(
            f"LMSTUDIO_HOST={given}: the server there is not LM Studio: {why_not_lm_studio(exc)}"
        ) from None
    except OSError:
        answering = False
    if not answering:
        raise ValueError(f"LMSTUDIO_HOST={given}: nothing answers there. Is LM Studio's server on?")
    return host


@pytest.fixture(scope="session")
def _live_host() -> str:
    assert HOST is not None
    try:
        return live_host(HOST)
    except ValueError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def live_client(_live_host: str) -> Iterator[lms.Client]:
    with lms.Client(_live_host) as client:
        yield client


@pytest.fixture
def live_model_name() -> str | None:
    return os.environ.get("LMSTUDIO_MODEL") or None
