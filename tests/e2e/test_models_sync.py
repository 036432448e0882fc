"""What only the sync model has: its class, outlines.Generator, threads sharing a client."""

import concurrent.futures
import gc
import json
import subprocess
import sys
import threading
import weakref
from typing import cast

import lmstudio as lms
import outlines
import pydantic
import pytest

from outlines_lmstudio import (
    AsyncLMStudio,
    InvalidInferenceArgumentError,
    LMStudio,
    from_lmstudio,
)
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL, VISION_MODEL
from .helpers import endpoint_count, eventually, png_image
from .test_models import Person, Pet


def test_from_lmstudio_picks_the_class(client: lms.Client) -> None:
    model = from_lmstudio(client, TEXT_MODEL)
    assert type(model) is LMStudio
    assert isinstance(model, outlines.models.LMStudio)
    with pytest.raises(TypeError, match=r"lmstudio.Client or an lmstudio.AsyncClient"):
        from_lmstudio("localhost:1234")  # type: ignore[call-overload]
    with pytest.raises(InvalidInferenceArgumentError, match="temperature"):
        from_lmstudio(client, TEXT_MODEL, temperature=0.1)  # type: ignore[call-overload]


def test_generator_sync_with_union_output(client: lms.Client, emulator: LMStudioEmulator) -> None:
    generator = outlines.Generator(from_lmstudio(client, TEXT_MODEL), Person | Pet)
    text = cast(str, generator("Who or what?"))
    value = pydantic.TypeAdapter(Person | Pet).validate_json(text)
    assert isinstance(value, Person | Pet)
    structured = emulator.predictions[-1].structured
    assert structured is not None
    assert "anyOf" in structured["jsonSchema"]


def test_threads_share_one_client(client: lms.Client, emulator: LMStudioEmulator) -> None:
    model = from_lmstudio(client, TEXT_MODEL)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(model("hi", Person))) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6
    assert all(Person.model_validate(json.loads(r)) for r in results)
    assert endpoint_count(emulator, "getOrLoad") == 1


def test_async_model_class_is_refused_for_sync_client(client: lms.Client) -> None:
    with pytest.raises(TypeError, match="AsyncClient"):
        AsyncLMStudio(client)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["stream", "parse_stream", "reply_stream"])
def test_a_stream_made_here_reads_in_another_thread(
    client: lms.Client, emulator: LMStudioEmulator, method: str
) -> None:
    """A web server makes a stream in one thread and reads it in its thread pool."""
    emulator.script(TEXT_MODEL, ['"Hello, world, from a thread"'])
    model = from_lmstudio(client, TEXT_MODEL)
    stream = getattr(model, method)("Greet", str)  # made in the main thread
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        items = pool.submit(list, stream).result(30)
    assert items
    assert emulator.predictions[-1].done
    assert not emulator.predictions[-1].cancelled


@pytest.mark.asyncio
async def test_a_sync_reply_stream_read_with_async_for_says_how_to_read_it(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    model = from_lmstudio(client, TEXT_MODEL)
    stream = model.reply_stream("Hello")
    with pytest.raises(TypeError, match=r"from LMStudio.*read it with for"):
        aiter(stream)  # type: ignore[arg-type]  # wrong on purpose (checkers say so too)
    with pytest.raises(TypeError, match=r"leave it early with close\(\)"):
        await stream.aclose()  # type: ignore[attr-defined]
    assert list(stream)  # the stream itself is untouched
    assert stream.reply is not None
    assert len(emulator.predictions) == 1


def test_a_model_whose_client_is_replaced_uses_the_new_client(
    emulator: LMStudioEmulator,
) -> None:
    """Handles, model traits and uploads belong to a client: a replaced client gets its own.

    The model holds its client's cache entries for speed; holding the old client's would
    send the prediction (or the image) to the old client's server.
    """
    red = png_image("red")
    with (
        LMStudioEmulator() as other,
        lms.Client(emulator.api_host) as first,
        lms.Client(other.api_host) as second,
    ):
        model = from_lmstudio(first, VISION_MODEL)
        model(["Describe", red])
        model.client = second
        assert model(["Describe again", red])
        assert model(["And again", red])  # the new client's sessions are connected now
        assert (len(emulator.predictions), len(other.predictions)) == (1, 2)
        assert (len(emulator.uploads), len(other.uploads)) == (1, 1)
        assert other.predictions[-1].images == [other.uploads[0].data]


@pytest.mark.parametrize("kind", ["stream", "parse_stream"])
def test_a_stream_collected_in_a_reference_cycle_cancels_on_the_server(
    slow_emulator: LMStudioEmulator, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Found by a probe: a stream held in a reference cycle was finalised with the SDK's own
    generators, in any order: closed first, they released the channel with no cancel (LM
    Studio generated to the end, the SDK logging each late fragment as an ERROR), or were
    closed while the drain read them ("generator already executing")."""
    emulator = slow_emulator
    # A reply of about 3 s, so that the cancel comes in time on a loaded machine (CI saw a
    # reply of 0.3 s generated to its end first, under parallel tests).
    emulator.script(TEXT_MODEL, ['{"name": "' + "a" * 4000 + '", "age": 1}'])

    class Holder:
        pass

    with lms.Client(emulator.api_host) as client:
        model = from_lmstudio(client, TEXT_MODEL)
        holder = Holder()
        holder.cycle = holder  # type: ignore[attr-defined]
        holder.stream = getattr(model, kind)("Who?", Person)  # type: ignore[attr-defined]
        next(iter(holder.stream))  # type: ignore[attr-defined]
        gone = weakref.ref(holder)
        del holder
        gc.collect()
        assert gone() is None
        emulator.wait_until(lambda: emulator.predictions[-1].done)
        prediction = emulator.predictions[-1]
        assert prediction.cancelled
        assert prediction.stop_reason == "userStopped"
        assert model("Again", max_tokens=3)  # the client is fine
        # The cancel's confirmation is read in the background: let it end before the
        # client closes, as this test is about the cancel (a read cut by the close is
        # `SyncReader._drain`'s: CI once saw it cut between two reads).
        assert eventually(
            lambda: (
                not any(t.name.startswith("outlines-lmstudio-drain") for t in threading.enumerate())
            )
        )
    assert not [r for r in caplog.records if "already closed channel" in r.getMessage()]


LEAVE_THEN_CLOSE = """
import sys
import lmstudio as lms
from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

with LMStudioEmulator() as emulator:
    for _ in range(60):
        with lms.Client(emulator.api_host) as client:  # closed as soon as the loop is left
            for chunk in from_lmstudio(client, sys.argv[1]).stream("Tell me a story"):
                break
    print("DONE", sum(p.stop_reason in ("userStopped", "eosFound") for p in emulator.predictions))
"""


def test_a_client_closed_right_after_a_stream_is_left_reports_nothing() -> None:
    """Found by a probe: the end of ``with lms.Client(...)`` right after a ``break`` cut the
    background read of the cancel's confirmation, and the SDK reported the coroutine it had
    made for it "never awaited" (1 to 8 times in 60 such leaves)."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", LEAVE_THEN_CLOSE, TEXT_MODEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "DONE 60" in done.stdout, done.stdout + done.stderr
    assert "never awaited" not in done.stderr
    assert "Exception ignored" not in done.stderr
