"""`_threads.idle_bound`: which ``read_timeout`` a sync call watches itself."""

from __future__ import annotations

from collections.abc import Iterator

import lmstudio as lms
import pytest

from outlines_lmstudio import _threads


@pytest.fixture
def sdk_timeout() -> Iterator[None]:
    before = lms.get_sync_api_timeout()
    yield
    lms.set_sync_api_timeout(before)


@pytest.mark.usefixtures("sdk_timeout")
@pytest.mark.parametrize(
    ("sdk", "ours", "watched"),
    [
        (60.0, None, None),  # no read_timeout: nothing to watch
        (60.0, 60.0, None),  # the SDK's own bound cuts it
        (60.0, 90.0, None),  # longer: the SDK's to cut
        (60.0, 0.5, 0.5),  # shorter: watched by the caller
        (None, 90.0, 90.0),  # the SDK waits forever: ours is watched
        (0.25, 0.5, None),  # the setting is read on every call
    ],
)
def test_idle_bound_follows_the_sdk_setting(
    sdk: float | None, ours: float | None, watched: float | None
) -> None:
    lms.set_sync_api_timeout(sdk)
    assert _threads.idle_bound(ours) == watched


def test_idle_bound_calls_a_replaced_sdk_getter(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def spy() -> float:
        asked.append(True)
        return 2.0

    monkeypatch.setattr(lms, "get_sync_api_timeout", spy)
    assert _threads.idle_bound(1.0) == 1.0
    assert _threads.idle_bound(3.0) is None
    assert asked == [True, True]
