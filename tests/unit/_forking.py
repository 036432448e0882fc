"""Run a check in a forked child, for tests of what a child inherits."""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["in_child"]


def in_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a forked child (which then leaves at once); return what it says."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # never back into pytest here, whatever the check does
        try:
            os.write(write_end, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        return os.read(read_end, 1) == b"1"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
