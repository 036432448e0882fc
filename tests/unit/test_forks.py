"""A forked child makes the package's process-wide locks afresh (`_forks`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outlines_lmstudio import _cache, _common, _discovery, _forks, _images, _threads, _typed

from ._forking import in_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")

_LOCKS: dict[str, Callable[[], threading.Lock | threading.RLock]] = {
    "an image's encoding": lambda: _images._LOCKS[0],
    "the image cache": lambda: _images.IMAGES._lock,
    "the search of the default ports": lambda: _discovery._DISCOVERY,
    "a sync client's connecting": lambda: _threads._CONNECT_LOCK,
    "the batches of daemon threads": lambda: _threads._Running._lock,
    "the handle cache": lambda: _common.SYNC_HANDLES._guard,
    "the image upload cache": lambda: _common.SYNC_IMAGES._guard,
    "the model traits cache": lambda: _common.SYNC_TRAITS._guard,
    "the loads' progress": lambda: _cache.LOADS._guard,
    "a connection's reset": lambda: _common.SYNC_RECONNECTS._lock,
}


@pytest.mark.parametrize("lock", list(_LOCKS.values()), ids=list(_LOCKS))
def test_a_lock_a_parent_thread_holds_at_fork_is_free_in_the_child(
    lock: Callable[[], threading.Lock | threading.RLock],
) -> None:
    """Found by a probe: a child that made its own client and model (the documented way)
    waited for ever on the lock of an image a parent thread was encoding, and on the
    lock of a parent thread's search of the default ports, beyond any ``timeout=``."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:
        assert in_child(lambda: lock().acquire(timeout=5))
    finally:
        release.set()
        holder.join(10)
    with lock():  # the parent's lock is the same, and free again
        pass


_POOL = _threads.BatchPool()


def test_batch_threads_and_grammar_checks_are_made_afresh_in_a_forked_child() -> None:
    """Found by a review: a child's batch through a model made in the parent waited forever
    for the parent's pool threads (and its lock), and a grammar's check, kept for the
    process, held the lock a parent thread parsing at the fork took."""
    with _POOL.lend(2) as pool:
        assert pool.submit(lambda: 1).result(10) == 1
    check = _typed._grammar_check('?start: "a"')[0]

    def in_the_child() -> bool:
        fresh = _typed._grammar_check('?start: "a"')[0] is not check and check("a") == []
        with _POOL.lend(2) as pool:
            return fresh and pool.submit(lambda: 2).result(5) == 2

    assert in_child(in_the_child)


def test_a_detached_socket_reads_nothing_and_writes_nowhere_while_its_peer_is_untouched() -> None:
    """`detach` makes a descriptor refer to a silent socket of this process's own: what the
    peer sent stays unread for whoever else holds the socket (the parent, after a fork)."""
    ours, peer = socket.socketpair()
    theirs = socket.socket(fileno=os.dup(ours.fileno()))  # the parent's copy, in effect
    with ours, peer, theirs:
        ours.setblocking(False)
        peer.sendall(b"the parent's reply")
        _forks.detach([ours.fileno()])
        with pytest.raises(BlockingIOError):
            ours.recv(100)
        ours.send(b"from the child")
        theirs.settimeout(5)
        assert theirs.recv(100) == b"the parent's reply"
        peer.settimeout(0.2)
        with pytest.raises(TimeoutError):
            peer.recv(100)


def test_detach_leaves_what_is_not_a_socket_alone(tmp_path: Path) -> None:
    """A descriptor that is no longer a socket (closed and reused) is not replaced."""
    file = tmp_path / "kept"
    file.write_text("kept")
    with file.open() as handle:
        _forks.detach([handle.fileno(), 10**6])  # and one that is not open at all
        assert handle.read() == "kept"


def test_a_separated_loop_keeps_its_readers_and_its_wake_up_from_other_threads() -> None:
    """`separate_loop` gives the loop a new epoll set and wake-up pair, with what it watched."""
    loop = asyncio.new_event_loop()
    ours, peer = socket.socketpair()
    try:
        got: asyncio.Future[bytes] = loop.create_future()

        def read() -> None:
            if not got.done():
                got.set_result(ours.recv(10))

        loop.add_reader(ours.fileno(), read)
        selector: Any = loop._selector  # type: ignore[attr-defined]
        shared, wake = selector._selector, loop._ssock  # type: ignore[attr-defined]
        _forks.separate_loop(loop)
        assert selector._selector is not shared
        assert shared.closed
        assert loop._ssock is not wake  # type: ignore[attr-defined]
        assert wake.fileno() == -1
        peer.send(b"watched")
        assert loop.run_until_complete(asyncio.wait_for(got, 5)) == b"watched"
        woken: asyncio.Future[str] = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, [woken.set_result, "woken"]).start()
        assert loop.run_until_complete(asyncio.wait_for(woken, 5)) == "woken"
    finally:
        loop.close()
        ours.close()
        peer.close()


def test_a_separated_loop_still_hears_the_signals_it_handles() -> None:
    """Found by a probe: the signal wake-up descriptor kept the old pair's number, so the
    loop's handlers never ran, and the byte went to whatever took that number next."""
    loop = asyncio.new_event_loop()
    heard: asyncio.Future[str] = loop.create_future()

    def handle() -> None:
        if not heard.done():
            heard.set_result("heard")

    loop.add_signal_handler(signal.SIGUSR1, handle)
    try:
        _forks.separate_loop(loop)
        assert signal.set_wakeup_fd(-1) == loop._csock.fileno()  # type: ignore[attr-defined]
        signal.set_wakeup_fd(loop._csock.fileno())  # type: ignore[attr-defined]
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        assert loop.run_until_complete(asyncio.wait_for(heard, 5)) == "heard"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)
        loop.close()
