"""Run a command inside a private network namespace (its own loopback, nothing else).

LM Studio's default ports (41343, 52993, ...) belong to the whole machine: a test
that listens there could meet a real LM Studio, or another test. Inside
``unshare -n`` the loopback is empty and ours alone. That needs root (CI runs as
root) and Linux; elsewhere the tests that need it are skipped with the reason,
except under ``CI=true`` where a missing namespace fails the test instead.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence

import pytest

__all__ = ["require_private_network", "run_in_private_network", "unavailable_reason"]

_UP = 'ip link set lo up && exec "$0" "$@"'


@functools.cache
def unavailable_reason() -> str | None:
    """Say why a private network namespace cannot be made here, or ``None`` if it can."""
    if not sys.platform.startswith("linux"):
        return "private network namespaces need Linux"
    if os.geteuid() != 0:
        return "unshare -n needs root (CI runs as root)"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed (util-linux / iproute2)"
    probe = subprocess.run(
        ["unshare", "-n", "--", "sh", "-c", _UP, "true"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"unshare -n failed here: {probe.stderr.strip() or probe.returncode}"
    return None


def require_private_network() -> None:
    """Skip the calling test with the reason, or fail it under CI."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)
    pytest.skip(reason)


def run_in_private_network(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new network namespace with only loopback, brought up.

    Skips (or fails under CI) the calling test when namespaces are unavailable.
    """
    require_private_network()
    return subprocess.run(
        ["unshare", "-n", "--", "sh", "-c", _UP, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
