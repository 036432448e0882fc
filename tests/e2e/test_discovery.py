"""Default-port discovery end to end: ``lms.Client()`` with no host, in a private network.

The emulator listens on one of LM Studio's default ports inside ``unshare -n``, so no
real LM Studio (and no other test) can answer instead. The scenario runs in that
subprocess; these tests check what it reports.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio._discovery import (
    DEFAULT_PORTS,
    PROBE_BYTES,
    PROBE_SECONDS,
    EndlessAnswerError,
    OtherAnswerError,
    StalledStatusError,
    is_lm_studio,
    no_server_error,
    other_server_error,
)
from outlines_lmstudio.errors import LMStudioConnectionError, OutlinesLMStudioError

from ..private_network import run_in_private_network
from .other_server import serving_long_greeting, serving_stream, serving_trickled_headers

SCENARIO = Path(__file__).with_name("discovery_scenario.py")
MODEL = "qwen2.5-7b-instruct"
pytestmark = pytest.mark.timeout(180)


def scenario(*args: str, timeout: float = 120) -> dict[str, Any]:
    done = run_in_private_network([sys.executable, str(SCENARIO), *args], timeout=timeout)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("port", [DEFAULT_PORTS[0], DEFAULT_PORTS[-1]])
def test_a_client_without_host_finds_the_server_on_a_default_port(port: int) -> None:
    result = scenario("found", str(port))
    for front in ("sync", "async"):
        assert result[front]["host"] == f"127.0.0.1:{port}", result
        assert set(result[front]["person"]) == {"name", "age"}
    assert result["sync"]["batch"] == 3
    assert result["predictions"] == 5  # 1 + 3 sync, 1 async: every call reached the server


def test_nothing_on_the_default_ports_names_them_and_the_fix() -> None:
    result = scenario("nothing")
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        message = result[front]["message"]
        assert message == str(no_server_error(MODEL))  # the async one had no model (a review)
        for port in DEFAULT_PORTS:
            assert str(port) in message
        assert "lms server start" in message
        assert 'lms.Client("localhost:1234")' in message


def test_another_server_on_a_default_port_is_named_as_such() -> None:
    """Found by a probe: the SDK's probe let the HTML's JSONDecodeError out, raw."""
    result = scenario("other", str(DEFAULT_PORTS[0]))
    other = f"the server on 127.0.0.1:{DEFAULT_PORTS[0]} is not LM Studio: it answers, but not "
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        message = result[front]["message"]
        assert other in message
        assert "lms server start" in message
        assert f"(model={MODEL!r})" in message
    assert other in result["cli"]["stderr"]


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        # Found by a review: a server that took the connection and said nothing was
        # described as having "answered, but not as LM Studio does (ReadTimeout: timed
        # out)", its port not named, in the library's error and the CLI's.
        ("silent", "it takes connections but sent no answer within 1 s"),
        # Found by a probe: a 404 (any web server without the greeting's path) read as no
        # server there, as the SDK reads it: the port was not named, and the error said LM
        # Studio was not reachable.
        ("404", "it answers HTTP 404 to the greeting's URL"),
    ],
)
def test_another_server_on_a_default_port_is_named_with_what_it_did(kind: str, why: str) -> None:
    result = scenario("other", str(DEFAULT_PORTS[0]), kind)
    other = f"the server on 127.0.0.1:{DEFAULT_PORTS[0]} is not LM Studio: {why}"
    for front in ("sync", "async"):
        assert other in result[front]["message"], result
        assert "answered, but" not in result[front]["message"]
    assert other in result["cli"]["stderr"], result


def test_every_other_server_on_the_default_ports_is_named() -> None:
    """Found by a probe: a web server's 404 on the first port was named, and the silent
    server on a later one, which is what stops the SDK's own search, was not."""
    first, later = DEFAULT_PORTS[0], DEFAULT_PORTS[2]
    result = scenario("others", str(first), "404", str(later), "silent")
    other = (
        f"the servers on 127.0.0.1:{first} and 127.0.0.1:{later} are not LM Studio "
        f"(127.0.0.1:{first}: it answers HTTP 404 to the greeting's URL; "
        f"127.0.0.1:{later}: it takes connections but sent no answer within 1 s)"
    )
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        assert other in result[front]["message"], result
    assert other in result["cli"]["stderr"], result


def test_a_proxy_the_sdks_search_goes_through_is_named_not_a_missing_server() -> None:
    """Our search (no proxy) found LM Studio, the SDK's (through httpx, which reads
    HTTP_PROXY) did not, and the error said nothing answered on the port that had just
    answered (found by a probe)."""
    port = DEFAULT_PORTS[0]
    result = scenario("proxy", str(port))
    for front in ("sync", "async"):
        message = result[front]["message"]
        assert f"LM Studio answers at 127.0.0.1:{port}" in message, result
        assert "nothing answered" not in message
        assert "The environment sets HTTP_PROXY" in message
        assert "NO_PROXY=127.0.0.1,localhost" in message


def test_a_found_port_that_fails_is_not_said_to_be_given() -> None:
    """Found by a review: for a client made without a host, the hint said to check "the
    host and port given to lms.Client(...)"; none was given: the port was found, and kept."""
    result = scenario("greeting", str(DEFAULT_PORTS[0]))
    for front in ("sync", "async"):
        message = result[front]["message"]
        assert f"127.0.0.1:{DEFAULT_PORTS[0]}" in message, result
        assert "given to lms.Client" not in message
        assert "made without a host and keeps the port it found first" in message
        assert "make a new lms.Client()" in message


def test_lm_studio_behind_another_server_is_named_or_found() -> None:
    """Found by a review: LM Studio takes a later default port when the first is taken, and
    the SDK's search stops at the other server. The library cannot give the user's client
    a host: its error names the one to pass; the CLI, which makes its client, uses it."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("behind", str(first), str(second))
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        assert f'lms.Client("127.0.0.1:{second}")' in result[front]["message"]
        assert f"the server on 127.0.0.1:{first} is not LM Studio" in result[front]["message"]
    assert result["cli"]["status"] == 0, result["cli"]["stderr"]


def test_lm_studio_behind_a_server_the_sdks_search_goes_past_is_used() -> None:
    """Found by a probe: a web server's 404 on the first default port made the library
    refuse ("it stops the lmstudio SDK's search"), though the SDK's probe reads a status
    other than 200 as nothing there and goes on to LM Studio, as a plain client did."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("behind", str(first), str(second), "404")
    for front in ("sync", "async"):
        assert result[front].get("host") == f"127.0.0.1:{second}", result
        assert set(result[front]["person"]) == {"name", "age"}, result
    assert result["sync"]["batch"] == 3
    assert result["cli"]["status"] == 0, result["cli"]["stderr"]


def test_lm_studio_behind_a_404_that_streams_is_named_not_waited_for() -> None:
    """Found by a review: the probe took any status other than 200 for a server the SDK's
    search passes, and entered the client; the SDK's probe reads the 404's body whole, and
    one that streams held the call for good (async: a handshake timeout, misnamed)."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("behind", str(first), str(second), "404 stream", timeout=90)
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        message = result[front]["message"]
        assert f'lms.Client("127.0.0.1:{second}")' in message
        assert (
            f"the server on 127.0.0.1:{first} is not LM Studio: it answers HTTP 404 to the "
            "greeting's URL, with an answer that does not end"
        ) in message
    assert result["cli"]["status"] == 0, result["cli"]["stderr"]


def test_a_404_that_does_not_end_is_named_for_a_host_given() -> None:
    """Found by a review: once a 404's body was read to its end, one that streams lost its
    status ("answers without end"), and a host given got the SDK's "Is LM Studio running?"."""
    with serving_stream(status=404) as port:
        host = f"127.0.0.1:{port}"
        with pytest.raises(StalledStatusError) as info:
            is_lm_studio(host)
        said = "it answers HTTP 404 to the greeting's URL, with an answer that does not end"
        assert str(info.value) == said
        error = other_server_error(host, "m")
    assert error is not None
    assert str(error).startswith(f"The server at {host} is not LM Studio: {said}.")


def test_a_host_name_that_is_not_ascii_is_probed_as_the_sdk_probes_it() -> None:
    """Found by a review: the probe gave httpcore the name as it was, which takes ASCII
    only ("unexpected TypeError ... a bug" in the CLI); httpx (the SDK's) IDNA-encodes it."""
    code = (
        "from outlines_lmstudio._discovery import is_lm_studio\n"
        "print(is_lm_studio('h\u00e9llo:5999'))\n"
    )
    done = run_in_private_network([sys.executable, "-c", code], timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def test_the_probe_writes_the_host_as_the_sdks_probe_does() -> None:
    """Found by a review: an IPv6 address went without its brackets (``Host: ::1:1234``,
    invalid HTTP), where the SDK's probe (httpx) writes ``Host: [::1]:1234``."""
    seen: list[bytes] = []
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def answer() -> None:
            connection, _ = listener.accept()
            with connection:
                seen.append(connection.recv(4096))
                connection.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

        waiter = threading.Thread(target=answer, daemon=True)
        waiter.start()
        with pytest.raises(OtherAnswerError):
            is_lm_studio(f"[::1]:{port}")
        waiter.join(5)
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in seen[0], seen


def test_a_host_name_idna_cannot_write_is_no_other_server() -> None:
    """Found by a review: ``a..b:1`` raised a ``UnicodeError`` (a ``ValueError``), read as
    another server's answer ("it answers, but not with LM Studio's greeting"). The probe
    still raises it (the demo refuses such a ``LMSTUDIO_HOST`` by it)."""
    with pytest.raises(UnicodeError):
        is_lm_studio("a..b:1")
    assert other_server_error("a..b:1", "m") is None


def test_a_server_that_streams_ends_the_probe_at_its_deadline() -> None:
    """Found by a probe: the SDK's probe bounds each read to 1 s, not the answer, so a server
    that streams (a byte every half second) held it, and the demo, for good."""
    with serving_stream() as port:
        started = time.monotonic()
        with pytest.raises(EndlessAnswerError):
            is_lm_studio(f"127.0.0.1:{port}")
        assert time.monotonic() - started < PROBE_SECONDS + 1.5


def test_the_probe_reads_no_more_than_probe_bytes_of_an_answer() -> None:
    """Found by mutation testing: the probe stops reading past `PROBE_BYTES`, so a server
    that answers 200 with an endless body is given up at once (without the bound, the probe
    would read and keep all it sent until its 2 s deadline). Checked by what is read, not
    by timing: LM Studio's greeting padded past the bound, then ended, is refused (read
    whole, it would be taken for LM Studio); one at the bound is read."""
    with (
        serving_long_greeting(4 * PROBE_BYTES) as port,
        pytest.raises(EndlessAnswerError, match=f"more than {PROBE_BYTES} bytes"),
    ):
        is_lm_studio(f"127.0.0.1:{port}")
    with serving_long_greeting(PROBE_BYTES) as port:  # at the bound: read whole
        assert is_lm_studio(f"127.0.0.1:{port}")


def test_lm_studio_behind_a_server_that_streams_is_found_in_time() -> None:
    """The same server on the first default port: the library's search, its client without
    a host and the CLI all go past it (the search held them for good)."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("stream", str(first), str(second), timeout=90)
    assert result["found"] == f"127.0.0.1:{second}", result
    assert result["other"] == "EndlessAnswerError"
    assert result["seconds"] < PROBE_SECONDS + 1.5
    for front in ("sync", "async"):
        assert result[front]["error"] == "LMStudioConnectionError", result
        assert f'lms.Client("127.0.0.1:{second}")' in result[front]["message"]
        assert "it answers without end" in result[front]["message"]
    assert result["cli"]["status"] == 0, result["cli"]["stderr"]


def test_first_calls_at_once_share_one_failed_search() -> None:
    """Found by a review: threads or tasks that waited for a failed search of the default
    ports each searched again in turn (16 calls, 2 s each, 33 s); a call made after the
    failure searches again, so LM Studio started since is found (behind the same server)."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("concurrent", str(first), str(second), timeout=90)
    for front in ("sync", "async"):
        outcomes = result[front]["outcomes"]
        assert len(outcomes) == 6
        assert all("Cannot find LM Studio" in outcome for outcome in outcomes), result
        assert result[front]["seconds"] < 2 * PROBE_SECONDS + 1, result  # one search, not 6
    for batch in ("batch", "async_batch"):  # 16 items, 4 at a time
        assert "Cannot find LM Studio" in result[batch]["error"], result
        assert result[batch]["seconds"] < 2 * PROBE_SECONDS + 1, result  # its items share it
    (later,) = result["later"]["outcomes"]  # searched again: LM Studio, started since, found
    assert f'lms.Client("127.0.0.1:{second}")' in later, result


def test_the_search_is_not_counted_in_connect_timeout() -> None:
    """Found by a review: async, a 4 s search of the default ports counted against
    ``connect_timeout=3`` and was reported as a websocket handshake timeout."""
    first, second = DEFAULT_PORTS[0], DEFAULT_PORTS[1]
    result = scenario("slow-search", str(first), str(second))
    message = result["async"]["message"]
    assert message.startswith("Cannot find LM Studio"), result
    assert "handshake" not in message


def test_a_first_call_cancelled_during_the_search_holds_up_neither_close_nor_the_loop() -> None:
    """Found by a probe: the search went on after its caller left (nothing is entered
    then); close() waited for it (3.7 s), and so did the end of ``asyncio.run`` (4.0 s),
    behind two servers that stream (2 s each)."""
    first, second, third = DEFAULT_PORTS[:3]
    result = scenario("cancelled-search", str(first), str(second), str(third))
    assert result["left_run_seconds"] < 2 * PROBE_SECONDS - 1, result
    assert result["close_seconds"] < 2 * PROBE_SECONDS - 1, result
    # A call after close() searches again, to its end: LM Studio is found past both servers.
    assert f"LM Studio answers at 127.0.0.1:{third}" in result["again"], result


def test_the_sdks_second_search_is_not_counted_in_connect_timeout() -> None:
    """Found by a probe: past a default port that drops connections, the SDK's own search on
    entry spent its 1 s probe there, within ``connect_timeout=1``: the client was closed as
    if the handshake had timed out. Two such ports take the SDK's search 2 s, past
    ``connect_timeout=1.9``, which leaves the handshake room on a loaded machine (with one
    port and ``connect_timeout=1``, CI under load timed the handshake out twice)."""
    ports = [str(port) for port in DEFAULT_PORTS[:3]]
    result = scenario("dropping", *ports)
    assert result["async"]["host"] == f"127.0.0.1:{ports[2]}", result
    assert set(result["async"]["person"]) == {"name", "age"}


def test_a_server_that_trickles_its_headers_ends_the_probe_at_its_deadline() -> None:
    """Found by a review: the deadline covered the body only; a status line, then a header
    every half second, kept the probe going for minutes."""
    with serving_trickled_headers() as port:
        started = time.monotonic()
        with pytest.raises(EndlessAnswerError):
            is_lm_studio(f"127.0.0.1:{port}")
        assert time.monotonic() - started < PROBE_SECONDS + 0.5


def test_the_ports_are_the_sdks() -> None:
    # Our message lists the ports from our copy; this fails when an SDK release changes them.
    assert tuple(lms.Client._DEFAULT_API_PORTS) == DEFAULT_PORTS


def test_the_error_is_a_connection_error() -> None:
    error = no_server_error("m")
    assert isinstance(error, LMStudioConnectionError)
    assert isinstance(error, ConnectionError)
    assert isinstance(error, OutlinesLMStudioError)
    assert error.host is None
    assert error.model == "m"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_client_with_a_host_is_not_sent_looking_elsewhere() -> None:
    host = f"127.0.0.1:{_free_port()}"
    client = lms.Client(host)
    try:
        with pytest.raises(LMStudioConnectionError) as caught:
            from_lmstudio(client, "m")("Hi")
    finally:
        client.close()
    assert caught.value.host == host
    assert "Cannot find LM Studio" not in str(caught.value)


@pytest.mark.asyncio
async def test_an_async_client_with_a_host_is_not_sent_looking_elsewhere() -> None:
    host = f"127.0.0.1:{_free_port()}"
    model = from_lmstudio(lms.AsyncClient(host), "m")
    with pytest.raises(LMStudioConnectionError) as caught:
        await model("Hi")
    assert "Cannot find LM Studio" not in str(caught.value)
    assert host in str(caught.value)
