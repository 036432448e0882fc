import ctypes
import faulthandler
import math
import os
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from outlines_lmstudio import _interrupt, _os_sigint
from outlines_lmstudio._interrupt import SigintGuard, redeliver_if_dropped

pytestmark = pytest.mark.usefixtures("sigint_default")


def test_armed_guard_notes_the_first_ctrl_c_and_restores_the_default() -> None:
    guard = SigintGuard()
    assert guard.enabled
    guard.arm()
    os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread: noted, not raised
    assert guard.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the next one raises
    guard.disarm()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_disarmed_guard_lets_ctrl_c_through() -> None:
    guard = SigintGuard()
    guard.arm()
    guard.disarm()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert not guard.interrupted


def test_arming_and_disarming_let_no_other_thread_take_the_gil() -> None:
    """Each prediction arms and disarms the guard while the SDK's websocket thread is busy
    with the reply. A call that let go of the GIL there (ctypes' ``CDLL`` does, around each
    foreign call) handed it to that thread and waited to get it back: two handoffs a
    prediction, found with strace. With a long switch interval, a thread that wants the GIL
    gets it only if this one lets go."""
    assert _os_sigint.current() is not None  # the guard asks the system (not Windows)
    ran = 0
    stop = False

    def spin() -> None:
        nonlocal ran
        while not stop:
            ran += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)  # the spinning thread forces no switch in this test's time
    thread = threading.Thread(target=spin, daemon=True)
    try:
        thread.start()
        time.sleep(0.01)  # let go of the GIL: the thread spins, and now waits for it
        before = ran
        for _ in range(3):
            guard = SigintGuard(whole=True)
            guard.arm()
            assert guard.armed
            guard.armed = False
            guard.disarm()
        after = ran
    finally:
        stop = True
        sys.setswitchinterval(interval)
        thread.join()
    assert before > 0
    assert after == before


def test_a_custom_handler_is_left_alone() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        guard = SigintGuard()
        assert not guard.enabled
        guard.arm()
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]
        assert not guard.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_handler_installed_after_the_guard_was_made_is_left_alone() -> None:
    """Found by a probe: a stream's guard is made with the stream, and the application
    may set a handler between its fragments; the guard armed over it, then restored the
    default at disarm, dropping the application's handler."""
    seen: list[int] = []

    def app_handler(signum: int, frame: object) -> None:
        seen.append(signum)

    guard = SigintGuard()
    assert guard.enabled
    guard.arm()
    guard.disarm()  # a first fragment read
    previous = signal.signal(signal.SIGINT, app_handler)  # the loop's body sets one
    try:
        guard.arm()  # the next fragment's wait
        assert signal.getsignal(signal.SIGINT) is app_handler
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]
        assert not guard.interrupted
        guard.disarm()
        assert signal.getsignal(signal.SIGINT) is app_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_handler_set_while_armed_survives_the_disarm() -> None:
    guard = SigintGuard()
    guard.arm()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # e.g. from an SDK callback
    try:
        guard.disarm()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_not_in_other_threads() -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(SigintGuard().enabled))
    thread.start()
    thread.join()
    assert result == [False]


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or `cmd &`
    try:
        guard = SigintGuard()
        assert not guard.enabled
        guard.arm()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: neither noted nor raised
        assert not guard.interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_noted_ctrl_c_runs_on_interrupt_in_a_thread_of_its_own() -> None:
    ran = threading.Event()
    where: list[str] = []
    daemon: list[bool] = []

    def stop() -> None:
        where.append(threading.current_thread().name)
        daemon.append(threading.current_thread().daemon)
        ran.set()
        raise RuntimeError("a cancel that cannot be sent is ignored")

    guard = SigintGuard()
    guard.on_interrupt = stop
    guard.arm()
    os.kill(os.getpid(), signal.SIGINT)
    assert ran.wait(5)
    assert guard.interrupted
    assert where == ["outlines-lmstudio-cancel"]
    # Found by mutation testing: the thread is a daemon, so a cancel that cannot finish (a
    # server that never confirms) does not hold the program's exit after the Ctrl-C.
    assert daemon == [True]


def _in_a_child_forked_from_a_thread(check: Callable[[], bool]) -> bool:
    """Fork from a thread of this process; return what ``check`` said in the child.

    The forking thread is the child's only, and main, thread.
    """
    status: list[int] = []

    def fork_and_check() -> None:
        pid = os.fork()
        if pid == 0:  # the child
            ok = False
            try:  # never back into pytest (its worker's channel is the parent's too)
                ok = check()
            finally:
                os._exit(0 if ok else 1)
        status.append(os.waitpid(pid, 0)[1])

    thread = threading.Thread(target=fork_and_check)
    thread.start()
    thread.join(30)
    return status == [0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_from_another_thread_guards_its_new_main_thread() -> None:
    """After fork, the forking thread is the child's main thread: the guard arms there."""

    def arms() -> bool:
        guard = SigintGuard()
        guard.arm()
        armed = guard.enabled and guard.armed
        guard.disarm()
        return armed

    assert _in_a_child_forked_from_a_thread(arms)
    assert not SigintGuard().armed  # the parent's main thread is unchanged


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_guard_is_armed_has_ctrl_c_back() -> None:
    """Found by a probe: a thread that forked while the main thread waited with the guard
    armed (a ``fork`` process pool started from a thread) left its child the guard's
    handler, which swallowed the child's first Ctrl-C; the SDK by hand's child raises."""

    def interrupts() -> bool:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return False
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            return True
        return False

    guard = SigintGuard()
    guard.arm()
    try:
        assert guard.armed
        forked = _in_a_child_forked_from_a_thread(interrupts)
        assert guard.armed  # the parent's guard is unchanged
    finally:
        guard.disarm()
    assert forked


@pytest.fixture(params=["first arm", "later arm"])
def arms(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, sigint_default: None
) -> None:
    """A guard armed for the first time in the process, or once Python's handler is known."""
    if request.param == "first arm":
        monkeypatch.setattr(_interrupt._PythonsHandler, "address", None)
    else:
        guard = SigintGuard()
        guard.arm()
        guard.disarm()
        assert _interrupt._PythonsHandler.address is not None


@pytest.mark.skipif(_os_sigint.current() is None, reason="no sigaction to read")
@pytest.mark.usefixtures("arms")
@pytest.mark.parametrize("chain", [False, True])
def test_a_handler_installed_in_c_is_left_alone(tmp_path: Path, chain: bool) -> None:
    """Found by a probe: ``faulthandler.register(SIGINT)`` installs its handler in C, so
    Python's table still says ``default_int_handler``; the guard replaced it, and one call
    took the stack dump on Ctrl-C away for good (with ``chain=False``, Ctrl-C then raised,
    which the program had asked not to). The SDK by hand leaves it. With ``chain=True`` the
    Ctrl-C goes on to Python's own handler, which raises (found by mutation testing: a
    first arm left the guard's handler in Python's table, and it swallowed that one)."""
    before = _os_sigint.current()
    with (tmp_path / "dump.txt").open("w+") as dump:
        faulthandler.register(signal.SIGINT, file=dump, all_threads=False, chain=chain)
        try:
            guard = SigintGuard()
            guard.arm()
            assert not guard.armed
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
            for _ in range(2):  # during the call, and after it
                try:
                    os.kill(os.getpid(), signal.SIGINT)  # dumped; raised only if chained
                    raised = False
                except KeyboardInterrupt:
                    raised = True
                assert raised is chain
                guard.disarm()
            assert not guard.interrupted
        finally:
            faulthandler.unregister(signal.SIGINT)
        dump.seek(0)
        assert dump.read().count("Stack (most recent call first)") == 2
    after = _os_sigint.current()
    assert before is not None
    assert after is not None
    assert after.handler == before.handler  # Python's own again


_FLAGS = ctypes.sizeof(ctypes.c_void_p) + 128  # glibc's sa_flags, after handler and sa_mask


def _restarts() -> bool:
    """Whether SIGINT has SA_RESTART (what ``signal.siginterrupt(SIGINT, False)`` sets)."""
    action = _os_sigint.current()
    assert action is not None
    flags = int.from_bytes(bytes(action.raw)[_FLAGS : _FLAGS + 4], sys.byteorder)
    return bool(flags & 0x10000000)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or _os_sigint.current() is None,
    reason="reads sa_flags where glibc has it",
)
@pytest.mark.usefixtures("arms")
def test_the_flags_signal_siginterrupt_set_are_given_back() -> None:
    """Found by a probe: ``signal.siginterrupt(SIGINT, False)`` (SA_RESTART) was cleared by
    one call; the SDK by hand keeps it. Given back after a disarm and after a Ctrl-C."""

    assert not _restarts()
    signal.siginterrupt(signal.SIGINT, False)
    try:
        assert _restarts()
        guard = SigintGuard()
        guard.arm()
        assert guard.armed
        guard.disarm()
        assert _restarts()
        guard = SigintGuard()
        guard.arm()
        os.kill(os.getpid(), signal.SIGINT)  # noted: Python's handler is back, with the flag
        assert guard.interrupted
        assert _restarts()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert not _restarts()


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc" or _os_sigint.current() is None,
    reason="reads sa_flags where glibc has it",
)
def test_a_ctrl_c_right_after_the_handler_is_installed_gives_the_flags_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by a review: a Ctrl-C in the moment after ``arm`` installed its handler, before
    it recorded what to give back, lost the ``siginterrupt`` flags for good, and left the
    guard saying it was armed with no handler. Python runs the handler as soon as
    ``signal.signal`` returns: the wrapper sends SIGINT there."""
    warm = SigintGuard()
    warm.arm()  # Python's handler in C is known from here
    warm.disarm()
    raw = _interrupt._RAW

    class SignalAtOnce:
        def getsignal(self, signalnum: int) -> Any:
            return raw.getsignal(signalnum)

        def signal(self, signalnum: int, handler: Any) -> Any:
            previous = raw.signal(signalnum, handler)
            if getattr(handler, "__name__", "") == "_note":
                signal.raise_signal(signal.SIGINT)
            return previous

    signal.siginterrupt(signal.SIGINT, False)
    try:
        assert _restarts()
        monkeypatch.setattr(_interrupt, "_RAW", SignalAtOnce())
        guard = SigintGuard()
        guard.arm()
        monkeypatch.setattr(_interrupt, "_RAW", raw)
        assert guard.interrupted
        assert not guard.armed
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert _restarts()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


Reports = list[BaseException | None]


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> Reports:
    """What reaches the hook that was there before ours (Python's own would print it)."""
    seen: Reports = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: seen.append(report.exc_value))
    return seen


def _leaves(exc: BaseException, mark: bool = True) -> Generator[int, None, None]:
    """Yield once; closed, raise ``exc`` (marked first), as a stream left in its wait."""
    try:
        yield 1
    finally:
        if mark:
            assert isinstance(exc, KeyboardInterrupt)
            redeliver_if_dropped(exc)
        raise exc


def _closed_in_finalizer(exc: BaseException, mark: bool) -> None:
    """Raise ``exc`` from a generator's finalizer, where Python drops it."""
    for _ in _leaves(exc, mark):
        break  # the generator is collected here, and its exception dropped


def test_a_dropped_ctrl_c_comes_again_and_other_reports_pass_on(
    monkeypatch: pytest.MonkeyPatch, reports: Reports
) -> None:
    """A Ctrl-C raised in a finalizer is dropped by Python; one marked comes again, as a
    real SIGINT, once the main thread has left Python's report of it. Any other report
    reaches the hook that was there before."""
    _closed_in_finalizer(KeyboardInterrupt("marked"), mark=True)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)  # a real signal ends the sleep at once
    assert reports == []  # nothing printed
    # Long after (a Ctrl-C dropped within a second of one sent again is taken for it)
    monkeypatch.setattr(_interrupt._Sent, "at", -math.inf)
    other = ValueError("the application's own")
    _closed_in_finalizer(other, mark=False)
    _closed_in_finalizer(KeyboardInterrupt("not marked"), mark=False)
    time.sleep(0.2)  # nothing comes again
    assert [type(r) for r in reports] == [ValueError, KeyboardInterrupt]
    assert reports[0] is other


def test_a_ctrl_c_that_reaches_the_caller_is_not_sent_again() -> None:
    items = _leaves(KeyboardInterrupt())
    next(items)
    with pytest.raises(KeyboardInterrupt):
        items.close()  # called: the exception reaches the caller
    time.sleep(0.2)  # no second one


def test_no_redelivery_from_other_threads(
    monkeypatch: pytest.MonkeyPatch, reports: Reports
) -> None:
    monkeypatch.setattr(_interrupt._Sent, "at", time.monotonic())  # as if one was just sent
    worker = threading.Thread(target=_closed_in_finalizer, args=(KeyboardInterrupt(), True))
    worker.start()
    worker.join()
    time.sleep(0.2)  # no SIGINT sent to the main thread
    assert [type(r) for r in reports] == [KeyboardInterrupt]


def test_the_ctrl_c_comes_after_the_applications_generator_has_closed(
    reports: Reports,
) -> None:
    """A stream read through the application's own generator: Python collects the stream
    while that generator unwinds, before its ``finally``. Sent again then, the Ctrl-C was
    dropped there too and lost (found by a review), then, sent once more, it cut that
    ``finally`` short (found by a second review): it comes once the generator has closed."""
    cleanup: list[str] = []

    def outer() -> Iterator[int]:
        try:
            for item in _leaves(KeyboardInterrupt()):  # noqa: UP028 (yield from would close it)
                yield item
        finally:
            time.sleep(0.3)  # the application's cleanup
            cleanup.append("done")

    for _ in outer():
        break
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)
    assert cleanup == ["done"]
    assert reports == []


def test_a_ctrl_c_sent_again_and_dropped_again_by_a_generator_comes_once_more(
    reports: Reports,
) -> None:
    """Within a second of one sent again, a Ctrl-C a generator's finalizer drops is taken
    for it; one an ``atexit`` callback drops is reported as Python reports it (a second
    review: taken for ours, the report vanished and the exit went on cut short)."""
    _closed_in_finalizer(KeyboardInterrupt(), mark=True)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)
    _closed_in_finalizer(KeyboardInterrupt(), mark=False)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)
    at_exit = KeyboardInterrupt()
    sys.unraisablehook(types.SimpleNamespace(exc_value=at_exit, object=print))
    time.sleep(0.2)  # nothing comes
    assert reports == [at_exit]


def test_a_ctrl_c_dropped_as_the_script_ends_leaves_the_exit_alone(tmp_path: Path) -> None:
    """The program has ended: sent again, the Ctrl-C cut the application's ``atexit``
    callback short, and its report vanished (found by a second review)."""
    script = textwrap.dedent(
        """
        import atexit, sys, time
        from outlines_lmstudio._interrupt import redeliver_if_dropped

        def save():
            time.sleep(0.5)
            open(sys.argv[1], "w").write("saved")

        atexit.register(save)

        def leaves():
            try:
                yield 1
            finally:
                exc = KeyboardInterrupt()
                redeliver_if_dropped(exc)
                raise exc

        for _ in leaves():
            break  # the script's last statement
        """
    )
    saved = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-c", script, str(saved)], capture_output=True, text=True, timeout=30
    )
    assert saved.read_text() == "saved", done.stderr
    assert "Exception ignored" not in done.stderr


def test_an_applications_hook_that_calls_ours_does_not_loop(reports: Reports) -> None:
    """Wrapped, then wrapped by the application, then wrapped again: each hook keeps its
    own predecessor. With one shared predecessor the hooks called each other until the
    recursion limit, and the report was lost (found by a review)."""
    _closed_in_finalizer(KeyboardInterrupt(), mark=True)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)
    calls: list[int] = []
    ours = sys.unraisablehook

    def application_hook(report: Any) -> None:
        calls.append(1)
        ours(report)

    sys.unraisablehook = application_hook
    _closed_in_finalizer(KeyboardInterrupt(), mark=True)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(5)
    _closed_in_finalizer(ValueError("the application's own"), mark=False)
    assert calls == [1]
    assert [type(r) for r in reports] == [ValueError]


def test_no_redelivery_under_an_applications_sigint_handler(reports: Reports) -> None:
    """The handler ran for the Ctrl-C; sent again, it would run twice (found by a review)."""
    calls: list[int] = []

    def handler(signum: int, frame: object) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        _closed_in_finalizer(KeyboardInterrupt(), mark=True)
        time.sleep(0.3)  # nothing comes
        assert calls == []
        assert [type(r) for r in reports] == [KeyboardInterrupt]  # as Python reports it
    finally:
        signal.signal(signal.SIGINT, previous)
