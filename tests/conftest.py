"""Fixtures for every test directory."""

import signal
from collections.abc import Iterator

import pytest


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
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
