"""Suite-wide hooks and fixtures.

- ``bash scripts/check --quick`` skips the tiers that need llama.cpp. With
  ``OUTLINES_LMSTUDIO_QUICK=1`` (set by ``--quick``; CI ignores it), tests that use a
  ``llama`` fixture (llama.cpp's grammar code) or carry the ``real_engine`` marker (a real
  model on llama.cpp) are skipped with the reason, even where llama-cpp-python is installed.
- Under CI (``CI=true``) a skipped test fails, but for the live tests (``lmstudio_live``,
  which need a real LM Studio) and skips whose reason starts with `BY_DESIGN` (a docs
  page's marked fragment): a tier whose dependency went missing (llama.cpp, the model
  package, ``unshare``, node) must not pass as skipped.
- ``sigint_default``: Ctrl-C as an interactive process has it, for the tests of Ctrl-C.
- ``client`` / ``async_client``: the real SDK's clients, entered, on the ``emulator`` fixture
  of the folder that asks (the synthetic emulator in ``e2e/``, the llama.cpp one in
  ``real_engine/``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Generator, Iterator

import lmstudio as lms
import pytest
import pytest_asyncio
from _pytest.reports import TestReport

from outlines_lmstudio.testing import LMStudioEmulator

QUICK_REASON = "scripts/check --quick: llama.cpp tiers skipped (CI runs them)"
BY_DESIGN = "by design: "
"""The start of a skip reason CI takes as it is (what is skipped is never meant to run)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("OUTLINES_LMSTUDIO_QUICK", "0") in ("", "0"):
        return
    if os.environ.get("CI", "").lower() == "true":
        return
    skip = pytest.mark.skip(reason=QUICK_REASON)
    for item in items:
        if "llama" in getattr(item, "fixturenames", ()) or item.get_closest_marker("real_engine"):
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, TestReport, TestReport]:
    report: TestReport = yield
    ci = os.environ.get("CI", "").lower() == "true"
    live = item.get_closest_marker("lmstudio_live") is not None
    if ci and report.skipped and not hasattr(report, "wasxfail") and not live:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        if str(reason).removeprefix("Skipped: ").startswith(BY_DESIGN):
            return report
        report.outcome = "failed"
        report.longrepr = f"CI must run this test, but it was skipped: {reason}"
    return report


@pytest.fixture
def sigint_default() -> Iterator[None]:
    """Ctrl-C as an interactive Python process has it, however pytest was started.

    Started in the background from a non-interactive shell (``pytest &``, ``nohup``, a job
    runner), a process inherits SIGINT as ignored, and Python then keeps it ignored: the
    library leaves an ignored SIGINT alone, and a child process inherits the disposition.
    Tests of Ctrl-C set the default handler here (children started meanwhile get SIG_DFL),
    and put back what was there.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGHUP too, which ``nohup`` passes ignored: children started meanwhile get SIG_DFL.
    hangup = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGHUP, hangup)


@pytest.fixture
def client(emulator: LMStudioEmulator) -> Iterator[lms.Client]:
    with lms.Client(emulator.api_host) as sync_client:
        yield sync_client


@pytest_asyncio.fixture
async def async_client(emulator: LMStudioEmulator) -> AsyncIterator[lms.AsyncClient]:
    async with lms.AsyncClient(emulator.api_host) as entered:
        yield entered
