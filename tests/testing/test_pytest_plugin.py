"""The pytest plugin, run in a separate pytest session with pytester."""

from __future__ import annotations

import sys

import pytest

from outlines_lmstudio._install import install_command

pytest_plugins = ["pytester"]

_INNER = ("-p", "no:cacheprovider", "-p", "no:randomly", "-W", "error")
"""How each inner run is made: some inner files' tests run in their file's order (found by a
probe: with pytest-randomly installed, a test waiting for the one before it failed)."""

_TEST_FILE = """
import lmstudio as lms

def test_uses_the_fixture(lmstudio_emulator):
    lmstudio_emulator.script("qwen2.5-7b-instruct", ["scripted"])
    with lms.Client(lmstudio_emulator.api_host) as client:
        assert client.llm.model("qwen2.5-7b-instruct").respond("hi").content == "scripted"
    assert lmstudio_emulator.predictions[-1].last_user_text == "hi"

def test_state_is_reset(lmstudio_emulator):
    assert lmstudio_emulator.predictions == []

def test_changes_settings(lmstudio_emulator):
    lmstudio_emulator.token_latency = 5.0
    lmstudio_emulator.validate_frames = False

def test_settings_are_restored(lmstudio_emulator):
    assert lmstudio_emulator.token_latency == 0.0
    assert lmstudio_emulator.validate_frames  # the drift guard is on again

def test_failure_shows_the_trace(lmstudio_emulator):
    with lms.Client(lmstudio_emulator.api_host) as client:
        client.llm.model("qwen2.5-7b-instruct").respond("hi")
    assert False, "deliberate"

def test_violation_fails_the_test(lmstudio_emulator):
    lmstudio_emulator._violation("made-up drift")

def test_fails_before_any_message(lmstudio_emulator):
    assert False, "no trace section for it"

def test_violates_then_skips(lmstudio_emulator):
    import pytest
    lmstudio_emulator._violation("drift before a skip")
    pytest.skip("skipped after the drift")
"""


@pytest.mark.timeout(120)
def test_plugin_fixture_reset_trace_and_guard(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=_TEST_FILE)
    result = pytester.runpytest_subprocess(*_INNER)
    # A violation fails the test itself: from the fixture's teardown, the test was counted
    # as passed and as an error (found by a probe).
    # A skipped test's violations fail its teardown, as before (a review: they went unsaid).
    result.assert_outcomes(passed=4, failed=3, skipped=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*FAILURES*",
            "*test_failure_shows_the_trace*",
            "*LM Studio emulator trace*",
            '*"clientPasskey":"<redacted>"*',
            '*"type":"channelCreate","endpoint":"predict"*',
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*_ test_violation_fails_the_test _*",
            "*do not match the lmstudio SDK's wire schemas*",
            "*made-up drift*",
        ]
    )
    # The client's passkey never reaches the report.
    result.stdout.no_fnmatch_line('*"clientPasskey":"????????-*')
    result.stdout.no_fnmatch_line("*trace (0 frames*")  # a section saying nothing (a probe)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_violates_then_skips*"])


_CLIENT_VALUE_TESTS = """
import json

import lmstudio as lms
from websockets.sync.client import connect

def test_a_fractional_ttl_passes(lmstudio_emulator):
    with lms.Client(lmstudio_emulator.api_host) as client:
        client.llm.model("gemma-3-1b-it", ttl=1.5)

def test_a_client_value_lm_studio_refuses(lmstudio_emulator):
    lmstudio_emulator.unknown_endpoint = "error"
    with connect(f"ws://{lmstudio_emulator.api_host}/llm") as ws:
        ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "c", "clientPasskey": "p"}))
        ws.recv(timeout=5)
        specifier = {"type": "query", "query": {"identifier": "qwen2.5-7b-instruct"}}
        parameter = {"specifier": specifier, "inputString": 1.5}
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "countTokens", "callId": 1,
                            "parameter": parameter}))
        assert json.loads(ws.recv(timeout=5))["type"] == "rpcError"
"""


@pytest.mark.timeout(120)
def test_the_guard_tells_a_client_value_from_the_emulators_messages(
    pytester: pytest.Pytester,
) -> None:
    # Before: a fractional ttl failed the test, and every violation was reported as
    # "The LM Studio emulator exchanged messages that do not match ...".
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=_CLIENT_VALUE_TESTS)
    result = pytester.runpytest_subprocess(*_INNER)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_a_client_value_lm_studio_refuses _*",
            "*The client sent requests whose values LM Studio refuses (the client's values, "
            "not the emulator's*",
            "*llm/countTokens rpcCall (the client's request)*",
        ]
    )
    result.stdout.no_fnmatch_line("*The LM Studio emulator sent messages*")


_STOPPING_TESTS = """
import lmstudio as lms

def test_uses_it_in_a_with(lmstudio_emulator):
    with lmstudio_emulator as emulator:
        assert emulator.running

def test_after_the_with(lmstudio_emulator):
    with lms.Client(lmstudio_emulator.api_host) as client:
        assert client.llm.model("qwen2.5-7b-instruct").respond("hi").content

def test_stops_it(lmstudio_emulator):
    lmstudio_emulator.stop()  # e.g. to see what a client does when LM Studio is gone

def test_after_the_stop(lmstudio_emulator):
    with lms.Client(lmstudio_emulator.api_host) as client:
        assert client.llm.model("qwen2.5-7b-instruct").respond("hi").content
"""
# Found by a probe: the emulator was started again at the next test's setup, after the
# module- and session-scoped fixtures of that test were made (they found it stopped), and on
# a new port (a client made before the stop lost it).
_WIDER_FIXTURES = """
import lmstudio as lms
import pytest

@pytest.fixture(scope="session")
def host(lmstudio_emulator_session):
    return lmstudio_emulator_session.api_host

def test_stops_it(lmstudio_emulator, host):
    lmstudio_emulator.stop()

def test_the_same_host_answers_again(lmstudio_emulator, host):
    assert lmstudio_emulator.api_host == host
    with lms.Client(host) as client:
        assert client.llm.model("qwen2.5-7b-instruct").respond("hi").content

def test_stops_it_last(lmstudio_emulator):
    # The last of the module: the next module's fixture is made before any test's setup,
    # so only this test's teardown starts it again (mutation testing: that was not held).
    lmstudio_emulator.stop()
"""
_LATER_MODULE = """
import pytest

@pytest.fixture(scope="module")
def host(lmstudio_emulator_session):
    return lmstudio_emulator_session.api_host  # raised "not running" when made

def test_a_module_fixture_finds_it_running(host):
    assert host
"""


@pytest.mark.timeout(120)
def test_a_test_that_stops_the_emulator_leaves_it_to_the_next(pytester: pytest.Pytester) -> None:
    # Before, a ``with lmstudio_emulator:`` in one test, or a stop(), stopped the session's
    # emulator, and every later test failed with "The LM Studio emulator is not running".
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=_STOPPING_TESTS)
    result = pytester.runpytest_subprocess(*_INNER)
    result.assert_outcomes(passed=4)


@pytest.mark.timeout(120)
def test_a_stopped_emulator_is_back_on_its_port_for_the_next_fixtures(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_a=_WIDER_FIXTURES, test_b=_LATER_MODULE)
    result = pytester.runpytest_subprocess(*_INNER)
    result.assert_outcomes(passed=4)


_WITHOUT_THE_EXTRA = """
import sys

sys.modules["websockets"] = None  # as if the testing extra were not installed
"""


def test_without_the_extra_the_fixture_says_what_to_install_once(
    pytester: pytest.Pytester,
) -> None:
    # Found by a probe: the message came twice, joined by "During handling of the above
    # exception, another exception occurred:" (pytest.fail inside the except block).
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(_WITHOUT_THE_EXTRA)
    pytester.makepyfile(test_user="def test_it(lmstudio_emulator):\n    pass\n")
    # -rN: no short summary, which repeats the message (in full under CI=true, where pytest
    # does not cut its lines to the terminal's width).
    result = pytester.runpytest_subprocess(*_INNER, "-rN")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert output.count(install_command("testing")) == 1
    assert "During handling" not in output
    assert "Traceback" not in output


_EARLIER_TEST_TESTS = """
import threading

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import Fault

M = "qwen2.5-7b-instruct"
replies_of_a = []
a_done = threading.Event()


@pytest.fixture(scope="session")
def session_client(lmstudio_emulator_session):
    with lms.Client(lmstudio_emulator_session.api_host) as client:
        yield client


def _respond(client, text, replies=None, done=None):
    try:
        reply = client.llm.model(M).respond(text).content
    except lms.LMStudioError as exc:  # a hung one ends when the session closes the client
        reply = repr(exc)
    if replies is not None:
        replies.append(reply)
    if done is not None:
        done.set()


def _in_background(*args):
    threading.Thread(target=_respond, args=args, daemon=True).start()


def test_a_leaves_a_delayed_prediction(lmstudio_emulator, session_client):
    lmstudio_emulator.add_fault(Fault("predict", "delay", seconds=0.5))
    _in_background(session_client, "from test a", replies_of_a, a_done)
    lmstudio_emulator.wait_until(lambda: len(lmstudio_emulator.predictions) == 1)


def test_b_keeps_its_script(lmstudio_emulator, session_client):
    lmstudio_emulator.script(M, ["b's reply"])
    assert a_done.wait(5)  # test a's prediction ends after this test's script was given
    assert replies_of_a != ["b's reply"]
    assert session_client.llm.model(M).respond("from test b").content == "b's reply"


def test_c_leaves_hung_predictions(lmstudio_emulator, session_client):
    lmstudio_emulator.add_fault(Fault("predict", "hang", after_fragments=1, times=2))
    _in_background(session_client, "hung")
    _in_background(session_client, "hung")
    emulator = lmstudio_emulator
    emulator.wait_until(lambda: [p.fragments != [] for p in emulator.predictions] == [True] * 2)
    assert lmstudio_emulator.peak_concurrency(M) == 2


def test_d_counts_only_its_own_predictions(lmstudio_emulator, session_client):
    assert lmstudio_emulator.peak_concurrency() == 0
    session_client.llm.model(M).respond("mine")
    assert lmstudio_emulator.peak_concurrency(M) == 1
    assert lmstudio_emulator.peak_concurrency() == 1
"""


@pytest.mark.timeout(120)
def test_a_prediction_of_an_earlier_test_takes_no_script_and_counts_in_no_peak(
    pytester: pytest.Pytester,
) -> None:
    # Before: a prediction still running from an earlier test (a delay fault, a hang on a
    # session client) took the next test's scripted reply, and reset() started the peak at
    # the predictions still running (test d saw 2 before its call, 3 after).
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user=_EARLIER_TEST_TESTS)
    result = pytester.runpytest_subprocess(*_INNER)
    result.assert_outcomes(passed=4)


@pytest.mark.timeout(120)
def test_a_program_that_imported_the_package_runs_pytest_without_a_warning(
    pytester: pytest.Pytester,
) -> None:
    """Found by a probe: the plugin's entry point makes pytest mark the whole package for
    assertion rewriting, so a runner script (or ipytest) that imported it first got
    "Module already imported so cannot be rewritten", an error under ``-W error``."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_user="def test_ok():\n    assert 1 + 1 == 2\n")
    pytester.makepyfile(
        run="import sys\n"
        "import outlines_lmstudio.testing\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-W', 'error', 'test_user.py']))\n"
    )
    result = pytester.run(sys.executable, "run.py")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*1 passed*"])
    result.stdout.no_fnmatch_line("*warning*")
