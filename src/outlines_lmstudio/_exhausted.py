"""Say when the process has run out of file descriptors (``EMFILE``, ``ENFILE``).

Every socket and file counts against ``ulimit -n``. Out of them, the lmstudio SDK reports
LM Studio "not reachable", and the CLI failed in ways that named another cause (found by a
probe of exhausted resources): these say which limit was reached instead.
"""

from __future__ import annotations

import errno
import os

__all__ = ["at_file_limit", "files_hint", "out_of_files"]

_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
_QUOTED = tuple(f"[Errno {code}] {os.strerror(code)}" for code in _OUT_OF_FILES)
"""How an ``OSError`` reads in the text of an error that quotes it (the SDK's)."""

_SPARE = 4
"""Fewer free descriptors than this, and an unexplained error is likely their lack.

Measured with the CLI's `generate`: it works from `ulimit -n 7`; at 6 an SDK thread cannot
import its event loop's modules, and the main thread gets "AsyncTaskManager ... is currently
inactive" (or a bare ``CancelledError``), by when a few descriptors are free again."""


def out_of_files(exc: BaseException) -> bool:
    """Say whether ``exc``, or an error it came from, is a process or system out of files.

    The lmstudio SDK quotes the ``OSError`` in its own error's text ("due to
    builtins.OSError: [Errno 24] Too many open files"), without chaining it: the text of
    an error other than an ``OSError`` is read too.
    """
    return _errno(exc) is not None


def _errno(exc: BaseException) -> int | None:
    """Return the ``EMFILE`` or ``ENFILE`` that ``exc`` or an error it came from is, if any."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            if error.errno in _OUT_OF_FILES:
                return error.errno
        else:
            text = str(error)
            for code, quoted in zip(_OUT_OF_FILES, _QUOTED, strict=True):
                if quoted in text:
                    return code
        error = error.__cause__ or error.__context__
    return None


def at_file_limit() -> bool:
    """Say whether the process cannot open one more file now, or only a few more.

    Either is an unexplained error's likely cause.
    """
    soft = _soft_limit()
    if soft is not None:
        try:  # Linux, and /dev/fd elsewhere: the descriptors open now
            in_use = len(
                os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
            )
        except OSError as exc:
            return exc.errno in _OUT_OF_FILES
        if soft - in_use < _SPARE:
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


def files_hint(exc: BaseException | None = None) -> str:
    """Return what to do about it, with the process's limit where the platform has one.

    ``exc``: the error, when there is one: the whole system out of files (``ENFILE``) is
    not the process's limit.
    """
    if exc is not None and _errno(exc) == errno.ENFILE:
        return (
            "The system has as many files open as it may, across all its programs: close "
            "some, or raise its limit (on Linux, fs.file-max)."
        )
    soft = _soft_limit()
    if soft is None:
        return (
            "This process has as many files and sockets open as it may: close the clients "
            "and files it no longer uses."
        )
    return (
        f"This process has as many files and sockets open as it may (its limit, `ulimit -n`, "
        f"is {soft}): close the clients and files it no longer uses, or raise the limit (up "
        f"to its hard limit, `ulimit -Hn`), e.g. `ulimit -n {max(4096, 2 * soft)}`."
    )
