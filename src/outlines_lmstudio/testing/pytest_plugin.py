"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures
--------
lmstudio_emulator_session
    One `LMStudioEmulator` for the whole session, with the drift guard on.
lmstudio_emulator
    That emulator, `reset <LMStudioEmulator.reset>` for each test (and started
    again if a test stopped it). The test
    fails if a message broke the SDK's wire schemas; when a test that uses it
    fails, the emulator's frame trace is added to the report.

Nothing here imports websockets until a fixture is used, so installing the
plugin never breaks a test session without the ``testing`` extra; and it uses only
what pytest 7 with pluggy 1.0 has (an old-style hook wrapper, no ``pytest.StashKey``),
since it loads in every pytest session of an environment that has the package.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from outlines_lmstudio.testing import LMStudioEmulator

__all__ = ["lmstudio_emulator", "lmstudio_emulator_session"]

_IN_USE: dict[str, LMStudioEmulator] = {}
"""The emulator of each running test that uses the fixture, by node id."""
_REPORTED: dict[str, int] = {}
"""How many of a running test's wire-schema violations its call's report has failed it for."""


@pytest.fixture(scope="session")
def lmstudio_emulator_session() -> Iterator[LMStudioEmulator]:
    """Yield one running LM Studio emulator for the session (drift guard on)."""
    from outlines_lmstudio.testing import LMStudioEmulator
    from outlines_lmstudio.testing._server import require_extra

    try:
        require_extra()
    except ImportError as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # outside the except block: the message once, not chained to itself
        pytest.fail(missing, pytrace=False)
    with LMStudioEmulator(validate_frames=True) as emulator:
        yield emulator


@pytest.fixture
def lmstudio_emulator(
    request: pytest.FixtureRequest, lmstudio_emulator_session: LMStudioEmulator
) -> Iterator[LMStudioEmulator]:
    """Yield the session's emulator, reset; fail on wire-schema violations."""
    emulator = lmstudio_emulator_session
    if not emulator.running:  # an earlier test stopped it
        emulator.start()
    emulator.reset()
    _IN_USE[request.node.nodeid] = emulator
    yield emulator
    if not emulator.running:
        # Started again now, not at the next test's setup: a module- or session-scoped
        # fixture of the next tests is made before it, and found it stopped (found by a
        # probe). On the same port when it is free, for a client made before the stop.
        emulator.start()
    # Those seen by the end of the test's call failed it there (`pytest_runtest_makereport`);
    # those that came later (late frames of its predictions) fail its teardown.
    violations = emulator.protocol_violations[_REPORTED.pop(request.node.nodeid, 0) :]
    if violations:
        pytest.fail(_violations_report(violations), pytrace=False)


def _violations_report(violations: list[str]) -> str:
    """Say which messages broke the SDK's wire schemas: the client's or the emulator's."""
    from outlines_lmstudio.testing._drift import FROM_CLIENT

    sections = (
        (
            [v for v in violations if FROM_CLIENT not in v],
            "The LM Studio emulator sent messages that do not match the lmstudio SDK's wire "
            "schemas",
        ),
        (
            [v for v in violations if FROM_CLIENT in v],
            "The client sent requests whose values LM Studio refuses (the client's values, not "
            "the emulator's; LM Studio answers them with only a warning, and the caller waits)",
        ),
    )
    parts = []
    for found, heading in sections:
        if found:
            listed = "\n".join(f"  - {v}" for v in found[:20])
            parts.append(f"{heading} ({len(found)}):\n{listed}")
    return "\n".join(parts)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Fail a test whose messages broke the SDK's wire schemas; attach the frame trace.

    The check is made when the test's call ends, so that the test is reported as failed
    (found by a probe: failed from the fixture's teardown, it was counted as both passed and
    an error). A test that failed already gets the violations as a section of its report; a
    skipped test's fail its teardown, as before (an xfail-marked test's too, which pytest
    reports as xfailed).
    """
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    emulator = _IN_USE.get(item.nodeid)
    if call.when == "teardown":
        _IN_USE.pop(item.nodeid, None)
    if emulator is None:
        return
    if call.when == "call" and (violations := emulator.protocol_violations):
        if report.passed and not hasattr(report, "wasxfail"):
            report.outcome = "failed"
            report.longrepr = _violations_report(violations)
            _REPORTED[item.nodeid] = len(violations)
        elif report.failed:
            report.sections.append(("LM Studio wire schemas", _violations_report(violations)))
            _REPORTED[item.nodeid] = len(violations)
        # A skipped, xfailed or xpassed test's are left to the teardown check, as before (a
        # review: a section of such a report is never shown, and they went unreported).
    if report.failed and emulator.trace:  # none: the test failed before any message
        report.sections.append(("LM Studio emulator trace", emulator.format_trace()))
