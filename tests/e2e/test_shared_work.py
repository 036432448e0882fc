"""Work the calls of a batch, or the models of one client, share: done once, failed once."""

import asyncio
import threading
from typing import Any

from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .fronts import Driven, Fronts
from .test_faults import _llm_sockets


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
    start before either has connected), so the second socket is seen in every run.
    """
    client = fronts.client(enter=False)
    text, vision = fronts.model(client, TEXT_MODEL), fronts.model(client, VISION_MODEL)
    before = _llm_sockets(emulator)
    results = _concurrently(fronts, [(m, f"x{i}") for i in range(3) for m in (text, vision)])
    assert [type(r) for r in results] == [str] * 6, results
    assert _llm_sockets(emulator) - before == 1
    if fronts.front == "async":
        fronts.run(vision.model.close())  # did not enter the client: leaves it open
        assert text("still open", max_tokens=2)
        fronts.run(text.model.close())  # entered it: closes it
        assert not client.llm.connected
