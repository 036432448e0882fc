"""Say when the process has run out of file descriptors (``EMFILE``, ``ENFILE``).

Every socket and file counts against ``ulimit -n``. Out of them, the lmstudio SDK reports
LM Studio "not reachable", and the CLI failed in ways that named another cause (found by a
probe of exhausted resources): these say which limit was reached instead.
"""

from __future__ import annotations

import errno
import os

__all__ = ["at_file_limit", "files_hint", "out_of_files"]

_FEW = 16
"""A limit under which the lmstudio SDK's threads fail in ways of their own.

Measured with the CLI's `generate`: it works from `ulimit -n 7`; at 6 an SDK thread cannot
import its event loop's modules, and the main thread gets "AsyncTaskManager ... is currently
inactive", by when the descriptors are free again. Twice the least, for other commands."""

_OUT_OF_FILES = frozenset({errno.EMFILE, errno.ENFILE})
_TEXTS = tuple(os.strerror(code) for code in sorted(_OUT_OF_FILES))


def out_of_files(exc: BaseException) -> bool:
    """Say whether ``exc``, or an error it came from, is a process or system out of files.

    The lmstudio SDK quotes the ``OSError`` in its own error's text ("due to
    builtins.OSError: [Errno 24] Too many open files"), without chaining it: the text is
    read too.
    """
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _OUT_OF_FILES:
            return True
        if any(text in str(error) for text in _TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def at_file_limit() -> bool:
    """Say whether the process cannot open one more file now, or may open very few.

    Either is an unexplained error's likely cause.
    """
    if (soft := _soft_limit()) is not None and soft < _FEW:
        return True
    try:
        descriptor = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        return exc.errno in _OUT_OF_FILES
    os.close(descriptor)
    return False


def _soft_limit() -> int | None:
    """Return how many descriptors the process may have open, ``None`` if not limited."""
    try:
        import resource
    except ImportError:  # Windows: no ulimit
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def files_hint() -> str:
    """Return what to do about it, with the process's limit where the platform has one."""
    soft = _soft_limit()
    limit = "" if soft is None else f" (its limit, `ulimit -n`, is {soft})"
    return (
        f"This process has as many files and sockets open as it may{limit}: close the "
        "clients and files it no longer uses, or raise the limit (e.g. `ulimit -n 4096`)."
    )
