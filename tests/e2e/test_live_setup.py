"""The live tests' own set-up: ``LMSTUDIO_HOST`` read as the CLI reads it, checked once.

Found by a probe: ``http://HOST:PORT``, which the CLI and the demo accept, made every live
test fail with the SDK's "not reachable" while the server ran; a web server at the address
was reported as unreachable too, by a traceback per test.
"""

import socket

import pytest

from outlines_lmstudio.testing import LMStudioEmulator
from tests.e2e.other_server import serving_html
from tests.live.conftest import live_host


def test_the_spellings_the_cli_takes_are_taken(emulator: LMStudioEmulator) -> None:
    host = emulator.api_host
    assert live_host(host) == host
    assert live_host(f"http://{host}/") == host
    assert live_host(f"  WS://{host}") == host


def test_a_path_is_refused_for_it(emulator: LMStudioEmulator) -> None:
    with pytest.raises(ValueError, match=r"has more than HOST:PORT \('/v1'\)"):
        live_host(f"{emulator.api_host}/v1")


def test_another_server_is_named_as_such() -> None:
    with (
        serving_html(status=404) as port,
        pytest.raises(ValueError, match="is not LM Studio: it answers HTTP 404"),
    ):
        live_host(f"127.0.0.1:{port}")


def test_nothing_there_is_said_once_plainly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match="nothing answers there"):
        live_host(f"127.0.0.1:{port}")
