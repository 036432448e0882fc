"""`_silence`: LM Studio's silence with the process's stalls left out (pure, no clocks)."""

from __future__ import annotations

import lmstudio as lms
import pytest

from outlines_lmstudio._silence import (
    SDK_STALL_SECONDS,
    SETTLE_SECONDS,
    STALL_SECONDS,
    Silence,
    StalledWait,
    sdk_stall,
    stalled_for,
)


def test_a_wait_that_ended_late_overslept_by_its_lateness_past_the_scheduler_s() -> None:
    assert stalled_for(10.0, 0.1, 10.1 + STALL_SECONDS) == 0.0  # the scheduler's lateness
    assert stalled_for(10.0, 0.1, 12.6) == pytest.approx(2.5)
    assert stalled_for(10.0, 0.1, 10.5) == pytest.approx(0.4)  # past the scheduler's: counted


def test_a_silence_runs_out_after_the_bound_and_the_settle() -> None:
    silence = Silence()
    assert silence.left(1.0, heard=100.0, now=100.4) == pytest.approx(0.6)
    assert silence.left(1.0, heard=100.0, now=101.0) == pytest.approx(SETTLE_SECONDS)
    assert silence.left(1.0, heard=100.0, now=101.2) == pytest.approx(SETTLE_SECONDS - 0.2)
    assert silence.left(1.0, heard=100.0, now=101.0 + SETTLE_SECONDS) == 0.0


def test_stalled_time_is_left_out_until_lm_studio_is_heard_from_again() -> None:
    silence = Silence()
    silence.stalled(100.0, 2.0)  # a wait overslept 2 s: no word from LM Studio counts there
    assert silence.left(1.0, heard=100.0, now=102.5) == pytest.approx(0.5)
    assert silence.left(1.0, heard=102.6, now=103.0) == pytest.approx(0.6)  # heard: counted anew


def test_a_stall_during_the_settle_gives_the_bound_its_time_again() -> None:
    silence = Silence()
    assert silence.left(1.0, heard=100.0, now=101.0) == pytest.approx(SETTLE_SECONDS)
    silence.stalled(100.0, 3.0)  # the settle's wait overslept
    assert silence.left(1.0, heard=100.0, now=104.2) == pytest.approx(SETTLE_SECONDS - 0.2)
    assert silence.left(1.0, heard=100.0, now=104.0 + SETTLE_SECONDS) == 0.0


def test_stalls_that_repeat_still_add_up_to_the_bound() -> None:
    silence, now = Silence(), 100.0
    runs_out = None
    for _ in range(40):  # stopped 0.6 s of every 0.7 s (the probe's Ctrl-Z and on)
        now += 0.6
        silence.stalled(100.0, 0.6)
        now += 0.1
        if silence.left(1.0, heard=100.0, now=now) == 0.0:
            runs_out = now
            break
    assert runs_out is not None
    # The bound after 1 s of running, 10 periods; the settle after 0.5 s more, 5 periods
    # (one or two more where the sums' rounding leaves a sliver).
    assert 100.0 + 0.7 * 15 - 0.01 <= runs_out <= 100.0 + 0.7 * 17 + 0.01


def test_a_silence_after_lm_studio_was_heard_in_a_settle_gets_a_settle_of_its_own() -> None:
    """Found by mutation testing: the settle of a silence that LM Studio then broke was
    kept, so the next silence, seen first when it had run out (the async reader looks only
    when its timer runs out), was cut off at once, with no second look."""
    silence = Silence()
    assert silence.left(1.0, heard=100.0, now=101.0) == pytest.approx(SETTLE_SECONDS)
    # Heard at 101.2 (the settle ended the first silence well); looked at next at 102.2.
    assert silence.left(1.0, heard=101.2, now=102.2) == pytest.approx(SETTLE_SECONDS)
    assert silence.left(1.0, heard=101.2, now=102.2 + SETTLE_SECONDS) == 0.0


def test_the_sdk_s_own_limit_run_out_is_a_stall_only_a_second_past_it() -> None:
    # A machine busy with LM Studio's own model may wake a waiting thread a little late: that
    # is no stall to ask again for (a silent server would be waited for twice).
    before = lms.get_sync_api_timeout()
    lms.set_sync_api_timeout(60.0)
    try:
        timeout = lms.LMStudioTimeoutError()
        assert sdk_stall(timeout, 100.0, 160.0 + SDK_STALL_SECONDS) is None
        stall = sdk_stall(timeout, 100.0, 172.0)
        assert stall is not None
        assert stall.limit == 60.0
        assert stall.overslept == pytest.approx(12.0)
        assert not stall.cancelled
        assert sdk_stall(TimeoutError(), 100.0, 172.0) is None  # not the SDK's
        stalled = StalledWait(60.0, 12.0, cancelled=False)  # ours: said already
        assert sdk_stall(stalled, 100.0, 172.0) is None
    finally:
        lms.set_sync_api_timeout(before)
