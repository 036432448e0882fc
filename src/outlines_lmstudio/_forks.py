"""What a forked child makes afresh, and what of its parent it lets go.

A forked child has one thread, the one that forked; a lock another thread of the parent
held at that moment stays held in the child for good. Found by a probe: a child that made
its own client and model (the documented way to use the library after ``fork``) waited
for ever on the lock of an image a parent thread was encoding, and on the lock of a
search of LM Studio's default ports, beyond any ``timeout=``. Each module with a
process-wide lock registers here what makes it afresh (`in_child`), and each object with
one is made afresh while it lives (`renewed`). The parent's sockets a child could read
through the parent's event loop are detached from the child (`detach`), and the child's
copy of such a loop gets a poller of its own (`separate_loop`).

Why hand-written: ``os.register_at_fork`` is the standard library's hook; this only
spares each module the check that it exists (not on Windows, which does not fork).
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import stat
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Renewable", "detach", "in_child", "renewed", "separate_loop"]


class Renewable(Protocol):
    """An object with locks of its own, or with state a forked child must check again."""

    def _after_fork(self) -> None:
        """Make its locks afresh (forget what they guarded for the parent's threads)."""


def in_child(action: Callable[[], object]) -> None:
    """Run ``action`` in every forked child, before the child's own code.

    Parameters
    ----------
    action
        Makes a module's process-wide state afresh: its locks, and what they guard.
    """
    if hasattr(os, "register_at_fork"):  # pragma: no branch - not on Windows
        os.register_at_fork(after_in_child=action)


_RENEWED: weakref.WeakSet[Renewable] = weakref.WeakSet()


def renewed(owner: Renewable) -> None:
    """Call ``owner._after_fork()`` in every forked child, while ``owner`` lives.

    Parameters
    ----------
    owner
        An object with locks of its own (a cache of the package), or a model whose client
        a forked child must check again.
    """
    _RENEWED.add(owner)


_QUIET: list[int] = []
"""The descriptor of the open end of each socket pair `detach` made in this process (see
there), open for the process's life: held as a socket object, it was reported unclosed
(a ``ResourceWarning``) at exit, found by a probe."""


def detach(descriptors: list[int]) -> None:
    """In a forked child, make the parent's sockets at ``descriptors`` this process's no more.

    After ``fork`` a child shares each socket with its parent, and the parent's event loop
    too, with its epoll set. A child that runs the parent's loop (a sync program's bridge
    loop, ``loop.run_until_complete(...)``, even for a call the package refuses at once)
    runs the parent's websocket readers with it: found by a probe, a child read the reply
    of the parent's call in flight off the shared socket, and anyio's pause of reading took
    the socket out of the epoll set both processes share, so the parent's call waited for
    ever (or until its ``timeout=``). Each descriptor is made to refer to one end of a
    socket pair of the child's own, non-blocking, whose other end stays open and silent:
    the child's readers find nothing to read, what it writes goes nowhere, and its changes
    to the epoll set name a socket the parent's entries do not (the kernel refuses them,
    and the selector ignores that). The parent's socket and its epoll entry are untouched.

    Why hand-written: no library detaches an inherited socket from a process; ``dup2`` is
    how POSIX replaces what a descriptor refers to.

    Parameters
    ----------
    descriptors
        The file descriptors of sockets of the parent (anything else is left alone).
    """
    sockets = [fd for fd in descriptors if _is_socket(fd)]
    if not sockets:
        return
    mine, silent = socket.socketpair()
    mine.setblocking(False)  # the flag is the pair's: descriptors pointing at it share it
    for fd in sockets:
        os.dup2(mine.fileno(), fd, inheritable=False)
    mine.close()
    _QUIET.append(silent.detach())


def separate_loop(loop: object) -> None:
    """In a forked child, give an event loop of the parent an epoll set and wake-up of its own.

    The child's copy of the loop shares its epoll set (a kernel object) and its wake-up
    socket pair with the parent's loop. Found by a probe: a child running it spun at 100%
    CPU while a socket of the parent held bytes the parent had not read yet (an idle
    preload master never reads them: for good), since the shared set kept saying it was
    readable and the child's detached descriptor (`detach`) read nothing; and what the
    child registered there woke the parent's loop. A fresh epoll set gets the loop's
    registrations, and the loop a wake-up pair of its own. Only a selector loop on epoll:
    ``poll`` and ``select`` keep nothing in the kernel, and a kqueue is not inherited.

    Why hand-written: asyncio supports no loop across ``fork``, and has no public way to
    renew a loop's poller; this reaches its selector's (``_selector``) and its wake-up
    methods, and does nothing when they are not there.

    Parameters
    ----------
    loop
        An event loop made in the parent (a client's, running or not).
    """
    epoll_selector = getattr(selectors, "EpollSelector", None)  # Linux only
    selector = getattr(loop, "_selector", None)
    shared = getattr(selector, "_selector", None)
    if epoll_selector is None or not isinstance(selector, epoll_selector):
        return
    if not isinstance(shared, select.epoll):
        return
    fresh = select.epoll()
    for key in selector.get_map().values():
        events = select.EPOLLIN if key.events & selectors.EVENT_READ else 0
        events |= select.EPOLLOUT if key.events & selectors.EVENT_WRITE else 0
        with contextlib.suppress(OSError):  # a descriptor closed since it was registered
            fresh.register(key.fd, events)
    selector._selector = fresh
    shared.close()  # the child's descriptor: the parent's set is untouched
    close_pipe = getattr(loop, "_close_self_pipe", None)
    make_pipe = getattr(loop, "_make_self_pipe", None)
    if callable(close_pipe) and callable(make_pipe) and getattr(loop, "_ssock", None) is not None:
        written = loop._csock.fileno()  # type: ignore[attr-defined]
        close_pipe()  # from the fresh set; closes the child's copies of the parent's pair
        make_pipe()
        _follow_signal_wakeup(written, loop._csock.fileno())  # type: ignore[attr-defined]


def _follow_signal_wakeup(old: int, new: int) -> None:
    """Point Python's signal wake-up descriptor at ``new`` if it was ``old``.

    The loop's signal handlers (``add_signal_handler``) have Python write each signal to
    the loop's wake-up pair; found by a probe, with the pair remade the child's handlers
    never ran, and the byte went into whatever took the old descriptor number next (a
    websocket of the child's own client, which the SDK then dropped).
    """
    try:
        current = signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: no wake-up descriptor is this thread's to set
        return
    signal.set_wakeup_fd(new if current == old else current)


def _is_socket(fd: int) -> bool:
    try:
        return stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        return False


def _after_fork_in_child() -> None:
    for owner in list(_RENEWED):
        owner._after_fork()


in_child(_after_fork_in_child)
