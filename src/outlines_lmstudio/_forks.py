"""What a forked child makes afresh (no I/O).

A forked child has one thread, the one that forked; a lock another thread of the parent
held at that moment stays held in the child for good. Found by a probe: a child that made
its own client and model (the documented way to use the library after ``fork``) waited
for ever on the lock of an image a parent thread was encoding, and on the lock of a
search of LM Studio's default ports, beyond any ``timeout=``. Each module with a
process-wide lock registers here what makes it afresh (`in_child`), and each object with
one is made afresh while it lives (`renewed`).

Why hand-written: ``os.register_at_fork`` is the standard library's hook; this only
spares each module the check that it exists (not on Windows, which does not fork).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Renewable", "in_child", "renewed"]


class Renewable(Protocol):
    """An object with locks of its own, or with state a forked child must check again."""

    def after_fork(self) -> None:
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
    """Call ``owner.after_fork()`` in every forked child, while ``owner`` lives.

    Parameters
    ----------
    owner
        An object with locks of its own (a cache of the package), or a model whose client
        a forked child must check again.
    """
    _RENEWED.add(owner)


def _after_fork_in_child() -> None:
    for owner in list(_RENEWED):
        owner.after_fork()


in_child(_after_fork_in_child)
