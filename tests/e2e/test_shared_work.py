"""Work the calls of a batch, or the models of one client, share: done once, failed once."""

import asyncio
import threading
from typing import Any

import pytest

from outlines_lmstudio import (
    BatchGenerationError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
)
from outlines_lmstudio.testing import Fault, LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .fronts import Driven, Fronts
from .helpers import endpoint_count
from .test_faults import _close, _llm_sockets


def _concurrently(fronts: Fronts, calls: list[tuple[Any, str]]) -> list[Any]:
    """Run ``model(prompt)`` for each pair at once: in threads, or gathered on the loop."""
    if fronts.front == "async":

        async def gather() -> list[Any]:
            models = [m.model if isinstance(m, Driven) else m for m, _ in calls]
            return await asyncio.gather(
                *(m(p, max_tokens=2) for m, (_, p) in zip(models, calls, strict=True)),
                return_exceptions=True,
            )

        result: list[Any] = fronts.run(gather())
        return result
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        model, prompt = calls[index]
        start.wait()
        try:
            results[index] = model(prompt, max_tokens=2)
        except Exception as exc:  # returned, as gather(return_exceptions=True) does
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_models_on_one_client_not_yet_connected_connect_it_once(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Their concurrent first calls open one socket and all answer.

    The async front entered an ``AsyncClient`` once per model, under a lock of each model's
    own: two models' first calls entered it twice, and 3 runs in 10 failed with the SDK's
    raw ``KeyError: 'llm'`` (found by a probe). The two enterings overlap every time (both
    start before either has connected), so the second socket is seen in every run. The sync
    front enters nothing: its sessions are made by the SDK on first use, unlocked, so two
    first calls on threads may make two (a review: 4 runs in 40, before this change too);
    there only the answers are checked.
    """
    client = fronts.client(enter=False)
    text, vision = fronts.model(client, TEXT_MODEL), fronts.model(client, VISION_MODEL)
    before = _llm_sockets(emulator)
    results = _concurrently(fronts, [(m, f"x{i}") for i in range(3) for m in (text, vision)])
    assert [type(r) for r in results] == [str] * 6, results
    if fronts.front == "async":
        assert _llm_sockets(emulator) - before == 1
        fronts.run(vision.model.close())  # did not enter the client: leaves it open
        assert text("still open", max_tokens=2)
        fronts.run(text.model.close())  # entered it: closes it
        assert not client.llm.connected


NOT_LOADED = "gemma-3-1b-it"  # in the emulator's catalogue, not loaded: getOrLoad loads it


@pytest.mark.parametrize(
    ("key", "fault", "error"),
    [
        (NOT_LOADED, "Failed to load model: not enough memory", LMStudioPredictionError),
        ("no-such-model", None, LMStudioModelNotFoundError),
    ],
    ids=["load-fails", "unknown-key"],
)
def test_a_batch_asks_once_for_a_model_it_cannot_have(
    fronts: Fronts,
    emulator: LMStudioEmulator,
    key: str,
    fault: str | None,
    error: type[Exception],
) -> None:
    """Every item fails with the lookup's error, and LM Studio is asked once.

    A failed lookup or load was asked again for each item (found by a probe: 200 load
    requests for a batch of 200 on the sync front, 50 on the async one), though
    docs/batch.md says the model is looked up once. The next call asks again: the
    failure is the batch's only (memory may have been freed meanwhile).
    """
    if fault is not None:
        emulator.add_fault(Fault("getOrLoad", "error", times=1, message=fault))
    model = fronts.model(fronts.client(), key, max_concurrency=4)
    before = endpoint_count(emulator, "getOrLoad")
    with pytest.raises(BatchGenerationError) as info:
        model.batch([f"x{i}" for i in range(40)], max_tokens=2)
    assert endpoint_count(emulator, "getOrLoad") - before == 1
    errors = info.value.errors
    assert sorted(errors) == list(range(40))
    assert {type(e) for e in errors.values()} == {error}
    assert len({str(e) for e in errors.values()}) == 1
    assert str(info.value).startswith("All 40 batch items failed, each with the same error: ")
    if fault is not None:  # asked again, and loaded this time
        assert model("again", max_tokens=2)
        assert endpoint_count(emulator, "getOrLoad") - before == 2


def test_a_batch_through_a_closed_client_says_each_item_failed_the_same_way(
    fronts: Fronts, emulator: LMStudioEmulator
) -> None:
    """Found by a probe: 5,000 characters listing the 1000 indexes, and "The other results
    are in .results" though there were none. Still a `BatchGenerationError` (docs/batch.md)."""
    client = fronts.client()
    model = fronts.model(client, TEXT_MODEL)
    model("warm up", max_tokens=2)
    _close(fronts, client)
    sent = len(emulator.requests)
    with pytest.raises(BatchGenerationError) as info:
        model.batch([f"x{i}" for i in range(1000)], max_tokens=2)
    message = str(info.value)
    assert message.startswith(
        "All 1000 batch items failed, each with the same error: LMStudioConnectionError: "
        "The lmstudio client this model uses was closed"
    )
    assert message.endswith("Each item's error is in .errors; there are no results.")
    assert len(message) < 800
    assert info.value.results == [None] * 1000
    assert len(emulator.requests) == sent
