"""chat's `PromptSignals`: a signal noted but not handled still ends the wait for a line.

The state that lost chat's Ctrl-C (the signal's flag set, the main thread blocked in a read
that nothing interrupts) is made here without timing luck: the signal is sent to another
thread, whose C handler notes it while the main thread's read goes on.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from outlines_lmstudio.cli._prompt_signals import PromptSignals

pytestmark = [
    pytest.mark.skipif(
        not hasattr(signal, "pthread_kill") or not hasattr(signal, "SIGURG"), reason="POSIX only"
    ),
    pytest.mark.usefixtures("sigint_default"),
]

WATCHER = "outlines-lmstudio prompt signals"


class Terminated(Exception):
    """Raised by the SIGTERM handler these tests install (the command line's raises too)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


@pytest.fixture
def sigterm_raises() -> Iterator[None]:
    before = signal.signal(signal.SIGTERM, _terminated)
    yield
    signal.signal(signal.SIGTERM, before)


class Elsewhere:
    """Send a signal to a new thread once the main thread reads; type a line if none came."""

    def __init__(self, signum: int, write: int, patience: float) -> None:
        self.typed = False
        self._came = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(signum, write, patience))
        self._thread.start()

    def _run(self, signum: int, write: int, patience: float) -> None:
        if not self._came.wait(0.3):  # the main thread is blocked in its read by then
            signal.pthread_kill(threading.get_ident(), signum)
            if not self._came.wait(patience):  # a user gives up and presses Enter
                self.typed = True
                os.write(write, b"a line\n")

    def done(self) -> None:
        self._came.set()
        self._thread.join()


@pytest.mark.parametrize(
    ("signum", "raised"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)],
    ids=["SIGINT", "SIGTERM"],
)
@pytest.mark.usefixtures("sigterm_raises")
def test_a_signal_noted_but_not_handled_ends_the_wait_at_the_prompt(
    pipe: tuple[int, int], signum: signal.Signals, raised: type[BaseException]
) -> None:
    read, write = pipe
    with PromptSignals() as signals:
        elsewhere = Elsewhere(signum, write, patience=5)
        try:
            with pytest.raises(raised), signals.prompt():
                os.read(read, 100)
        finally:
            elsewhere.done()
    assert not elsewhere.typed  # the handler ran in the read, before a line came


@pytest.mark.parametrize("after_a_prompt", [False, True])
def test_outside_the_prompt_nothing_is_interrupted(
    pipe: tuple[int, int], after_a_prompt: bool
) -> None:
    # The watcher interrupts only the wait for a line: elsewhere a reply's own Ctrl-C
    # handling is left as it is. The signal is still handled, after the read. After a
    # prompt too: its end is noted (found by mutation testing: nothing checked it).
    read, write = pipe
    with PromptSignals() as signals:
        if after_a_prompt:
            with signals.prompt():
                pass
        elsewhere = Elsewhere(signal.SIGINT, write, patience=0.5)
        try:
            with pytest.raises(KeyboardInterrupt):
                os.read(read, 100)
        finally:
            elsewhere.done()
    assert elsewhere.typed


def test_a_ctrl_c_handled_at_once_is_handled_once(pipe: tuple[int, int]) -> None:
    # The watcher's interruptions after a Ctrl-C the main thread handled itself raise
    # nothing more: the next prompt reads its line.
    read, write = pipe
    with PromptSignals() as signals:
        with pytest.raises(KeyboardInterrupt), signals.prompt():
            signal.raise_signal(signal.SIGINT)
        timer = threading.Timer(1.5, os.write, (write, b"next\n"))  # after all interruptions
        timer.start()
        try:
            with signals.prompt():
                assert os.read(read, 100) == b"next\n"
        finally:
            timer.join()


def test_leaves_the_process_as_it_found_it() -> None:
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    with PromptSignals():
        assert signal.getsignal(signal.SIGURG) is not signal.SIG_DFL
        assert any(thread.name == WATCHER for thread in threading.enumerate())
    assert signal.getsignal(signal.SIGURG) is signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1
    assert all(thread.name != WATCHER for thread in threading.enumerate())
    if fds is not None:
        assert set(os.listdir("/proc/self/fd")) == fds


def test_a_program_s_own_wakeup_descriptor_and_sigurg_handler_are_left_alone(
    pipe: tuple[int, int],
) -> None:
    write = pipe[1]
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)
    try:
        with PromptSignals():
            assert signal.set_wakeup_fd(write) == write
            assert all(thread.name != WATCHER for thread in threading.enumerate())
    finally:
        assert signal.set_wakeup_fd(-1) == write

    def theirs(signum: int, frame: FrameType | None) -> None:
        """A program's own SIGURG handler."""

    before = signal.signal(signal.SIGURG, theirs)
    try:
        with PromptSignals():
            assert signal.getsignal(signal.SIGURG) is theirs
            assert signal.set_wakeup_fd(-1) == -1
    finally:
        signal.signal(signal.SIGURG, before)


def test_from_another_thread_it_does_nothing() -> None:
    seen: list[object] = []

    def run() -> None:
        with PromptSignals() as signals, signals.prompt():
            seen.append(signal.getsignal(signal.SIGURG))
            seen.extend(thread.name for thread in threading.enumerate() if thread.name == WATCHER)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [signal.SIG_DFL]
