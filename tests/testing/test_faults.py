"""Every injected fault surfaces as a clear exception, never a hang."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import lmstudio as lms
import pytest

from outlines_lmstudio.testing import EmulatedModel, Fault, LMStudioEmulator

from .conftest import EMBED, PNG, TEXT, MakeEmulator, cancel_when_received, raw_rpc, raw_socket

pytestmark = pytest.mark.timeout(30)


def test_error_before_stream(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", "error", message="GPU on fire"))
    with pytest.raises(lms.LMStudioServerError, match="GPU on fire"):
        model.respond("hi")
    assert emu.predictions[-1].done
    assert emu.predictions[-1].fragments == []
    assert model.respond("hi").content  # the fault is spent


def test_error_mid_stream(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", "error", after_fragments=3))
    stream = model.respond_stream("hi")
    received: list[str] = []

    def consume() -> None:
        received.extend(fragment.content for fragment in stream)

    with pytest.raises(lms.LMStudioServerError, match="Injected failure"):
        consume()
    assert received == emu.predictions[-1].fragments
    assert len(received) == 3


def test_fault_for_another_model_does_not_match(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.add_fault(Fault("predict", "error", model="qwen2-vl-2b-instruct"))
    assert client.llm.model(TEXT).respond("hi").content
    with pytest.raises(lms.LMStudioServerError):
        client.llm.model("qwen2-vl-2b-instruct").respond("hi")


def test_a_fault_for_a_model_alias_matches_it(make_emulator: MakeEmulator) -> None:
    alias = "hugging-quants/llama-3.2-1b-instruct"
    llama = EmulatedModel("llama-3.2-1b-instruct", aliases=[alias])
    emulator = make_emulator(models=[llama])
    emulator.add_fault(Fault("predict", "error", model=alias, message="via alias"))
    with (
        lms.Client(emulator.api_host) as client,
        pytest.raises(lms.LMStudioServerError, match="via alias"),
    ):
        client.llm.model(alias).respond("hi")


def test_a_fault_that_could_never_match_is_refused(emu: LMStudioEmulator) -> None:
    # Found by a probe: it named a private module for the list of endpoints.
    with pytest.raises(ValueError, match=r"'predcit' is no LM Studio endpoint.*mean 'predict'"):
        Fault("predcit")
    with pytest.raises(ValueError, match=r"would ever match it\. The endpoints: alive, "):
        Fault("nothing-like-any")  # found by a review: "match it The endpoints"
    with pytest.raises(KeyError, match="no model or loaded instance named 'qwen-typo'"):
        emu.add_fault(Fault("predict", model="qwen-typo"))
    # An LM Studio endpoint the emulator does not serve (found by a probe: armed, never hit)
    with pytest.raises(ValueError, match="does not serve 'searchModels'"):
        emu.add_fault(Fault("searchModels"))


def test_fault_times(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", times=2))
    for _ in range(2):
        with pytest.raises(lms.LMStudioServerError):
            model.respond("hi")
    assert model.respond("hi").content
    emu.add_fault(Fault("predict"))
    emu.clear_faults()
    assert model.respond("hi").content


def test_rpc_error(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.embedding.model(EMBED)
    emu.add_fault(Fault("embedString", "error", message="embedder down"))
    with pytest.raises(lms.LMStudioServerError, match="RPC error: embedder down"):
        model.embed("x")


@pytest.mark.parametrize("after", [0, 2])
def test_drop_sync(emu: LMStudioEmulator, after: int) -> None:
    with lms.Client(emu.api_host) as client:
        model = client.llm.model(TEXT)
        emu.add_fault(Fault("predict", "drop", after_fragments=after))
        with pytest.raises(lms.LMStudioError):
            model.respond("hi")
    with lms.Client(emu.api_host) as client:
        assert client.llm.model(TEXT).respond("hi").content


@pytest.mark.asyncio
async def test_drop_async(emu: LMStudioEmulator) -> None:
    async with lms.AsyncClient(emu.api_host) as client:
        model = await client.llm.model(TEXT)
        emu.add_fault(Fault("predict", "drop"))
        with pytest.raises(lms.LMStudioError):
            await asyncio.wait_for(model.respond("hi"), 10)


def test_drop_on_upload(emu: LMStudioEmulator) -> None:
    with lms.Client(emu.api_host) as client:
        emu.add_fault(Fault("uploadFileBase64", "drop"))
        with pytest.raises(lms.LMStudioError):
            client.files.prepare_image(PNG)


def test_hang_sync_times_out(
    emu: LMStudioEmulator, client: lms.Client, sync_timeout: Callable[[float], None]
) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", "hang"))
    sync_timeout(0.5)
    with pytest.raises(lms.LMStudioTimeoutError):
        model.respond("hi")
    sync_timeout(30)
    assert model.respond("other requests are still served").content


def test_hang_on_rpc_only_hits_that_request(
    emu: LMStudioEmulator, client: lms.Client, sync_timeout: Callable[[float], None]
) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("getModelInfo", "hang"))
    sync_timeout(0.5)
    with pytest.raises(lms.LMStudioTimeoutError):
        model.get_info()
    assert model.get_context_length() == 4096  # the fault is spent


@pytest.mark.asyncio
async def test_hang_async_with_wait_for(emu: LMStudioEmulator, aclient: lms.AsyncClient) -> None:
    model = await aclient.llm.model(TEXT)
    emu.add_fault(Fault("predict", "hang", after_fragments=1))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(model.respond("hi"), 0.5)
    assert (await model.respond("still alive")).content


def test_delay(emu: LMStudioEmulator, client: lms.Client) -> None:
    import time

    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", "delay", seconds=0.3))
    start = time.monotonic()
    assert model.respond("hi").content
    assert time.monotonic() - start >= 0.3


@pytest.mark.asyncio
async def test_a_prediction_cancelled_in_its_delay_stops_at_once_and_takes_no_script(
    emu: LMStudioEmulator, aclient: lms.AsyncClient
) -> None:
    # Before: it waited the delay out, then took the reply scripted for the next request.
    model = await aclient.llm.model(TEXT)
    emu.add_fault(Fault("predict", "delay", seconds=5.0))
    emu.script(TEXT, ["for the next request"])
    assert await cancel_when_received(emu, model, "slow") == "userStopped"  # not after 5 s
    assert (await model.respond("next")).content == "for the next request"
    assert emu.predictions[0].cancelled
    assert emu.predictions[0].fragments == []


@pytest.mark.asyncio
async def test_a_prediction_cancelled_in_its_prompt_takes_no_script(
    emu: LMStudioEmulator, aclient: lms.AsyncClient
) -> None:
    # Before: the reply was drawn before the prompt was processed, so a prediction cancelled
    # meanwhile took the reply scripted for the next request.
    model = await aclient.llm.model(TEXT)
    emu.prompt_latency = 5.0
    emu.script(TEXT, ["for the next request"])
    assert await cancel_when_received(emu, model, "long prompt") == "userStopped"
    emu.prompt_latency = 0
    assert (await model.respond("next")).content == "for the next request"


@pytest.mark.asyncio
async def test_a_prediction_whose_model_is_unloaded_in_its_delay_ends_unloaded(
    emu: LMStudioEmulator, aclient: lms.AsyncClient
) -> None:
    # Found by a review: the delay came before the instance was looked up, so after a
    # `reset()` (which reloads every instance) an earlier test's delayed prediction took a
    # slot of the new instance and generated a whole reply there.
    model = await aclient.llm.model(TEXT)
    emu.add_fault(Fault("predict", "delay", seconds=0.3))
    slow = asyncio.create_task(model.respond("from the test before"))
    await emu.await_until(lambda: len(emu.predictions) == 1)
    emu.reset()
    result = await asyncio.wait_for(slow, timeout=5)
    assert result.stats.stop_reason == "modelUnloaded"
    assert result.content == ""
    assert (await model.respond("this test's")).stats.stop_reason == "eosFound"
    assert emu.peak_concurrency() == 1


def test_unload_fault(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    emu.add_fault(Fault("predict", "unload"))
    with pytest.raises(lms.LMStudioModelNotFoundError):
        model.respond("hi")
    assert TEXT not in {m.identifier for m in client.llm.list_loaded()}
    assert client.llm.model(TEXT).respond("reloaded").content


def test_server_side_unload_and_load(emu: LMStudioEmulator, client: lms.Client) -> None:
    model = client.llm.model(TEXT)
    emu.unload(TEXT)
    with pytest.raises(lms.LMStudioModelNotFoundError):
        model.respond("hi")
    assert emu.load(TEXT) == TEXT
    assert model.respond("hi").content
    assert emu.load(TEXT, "copy") == "copy"
    with pytest.raises(KeyError):
        emu.unload("nothing")
    with pytest.raises(KeyError):
        emu.load("nothing")


def test_get_or_load_error_fault(emu: LMStudioEmulator, client: lms.Client) -> None:
    emu.add_fault(Fault("getOrLoad", "error", message="disk full"))
    with pytest.raises(lms.LMStudioServerError, match="Model get/load error: disk full"):
        client.llm.model(TEXT)


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="kind"):
        Fault(kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        Fault(times=0)
    with pytest.raises(ValueError, match=r"Fault\.seconds must be a finite number"):
        Fault(kind="delay", seconds=float("inf"))  # would hang the request for ever
    with pytest.raises(ValueError, match=r"Fault\.seconds must be a finite number"):
        Fault(kind="delay", seconds=float("nan"))
    with pytest.raises(ValueError, match=r"Fault\.seconds must be a finite number"):
        Fault(kind="delay", seconds="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Fault\.times must be an integer"):
        Fault(times=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Fault\.after_fragments must be an integer"):
        Fault(after_fragments=True)
    with pytest.raises(ValueError, match=r"Fault\.message must be a string"):
        Fault(message=None)  # type: ignore[arg-type]


def test_add_fault_takes_only_a_fault(emu: LMStudioEmulator) -> None:
    # Before: AttributeError: 'str' object has no attribute 'model'.
    with pytest.raises(TypeError, match=r"add_fault\(\) takes a Fault"):
        emu.add_fault("predict")  # type: ignore[arg-type]


def test_fault_settings_that_would_be_ignored_are_refused() -> None:
    # Before, each was taken and had no effect: the fault struck at once, or never waited.
    with pytest.raises(ValueError, match="after_fragments applies to predict"):
        Fault("getModelInfo", "error", after_fragments=2)
    with pytest.raises(ValueError, match="after_fragments does not apply to an unload"):
        Fault("predict", "unload", after_fragments=2)
    with pytest.raises(ValueError, match='seconds is the wait of kind="delay"'):
        Fault("predict", "hang", seconds=2)


def test_faults_that_need_a_model_are_refused_where_requests_name_none() -> None:
    """Found by a probe: an unload fault on such an endpoint was armed and spent on nothing,
    and one for a model never struck (its requests name none)."""
    for endpoint in ("listLoaded", "uploadFileBase64", "listDownloadedModels"):
        with pytest.raises(ValueError, match="requests name no model, so an unload fault"):
            Fault(endpoint, "unload")
        with pytest.raises(ValueError, match="a fault for one model would never strike"):
            Fault(endpoint, "error", model=TEXT)
    with pytest.raises(TypeError, match=r"Fault\.model must be a string"):
        Fault("predict", model=5)  # type: ignore[arg-type]
    for endpoint in ("predict", "getOrLoad", "getModelInfo", "embedString", "unloadModel"):
        Fault(endpoint, "unload", model=TEXT)  # each names a model


@pytest.mark.parametrize("how", ["instanceReference", "empty query"])
def test_a_fault_for_a_model_strikes_requests_that_select_it_without_its_name(
    emu: LMStudioEmulator, how: str
) -> None:
    # Before: only a query's identifier was matched, so a fault for a model never struck
    # a request by instance reference (the TypeScript SDK's handles) or by an empty query.
    with raw_socket(emu, "llm") as ws:
        query = {"type": "query", "query": {"identifier": TEXT}}
        info = raw_rpc(ws, "getModelInfo", 0, {"specifier": query, "throwIfNotFound": True})
        reference = {
            "type": "instanceReference",
            "instanceReference": info["result"]["instanceReference"],
        }
        specifier = reference if how == "instanceReference" else {"type": "query", "query": {}}
        emu.add_fault(Fault("getModelInfo", "error", model=TEXT, message="struck"))
        emu.add_fault(Fault("predict", "error", model=TEXT, message="struck"))
        reply = raw_rpc(ws, "getModelInfo", 1, {"specifier": specifier, "throwIfNotFound": True})
        assert reply["type"] == "rpcError"
        assert reply["error"]["title"] == "struck"
        history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
        create = {
            "type": "channelCreate",
            "endpoint": "predict",
            "channelId": 0,
            "creationParameter": {
                "modelSpecifier": specifier,
                "history": history,
                "predictionConfigStack": {"layers": []},
            },
        }
        ws.send(json.dumps(create))
        frame = json.loads(ws.recv(timeout=5))
    assert frame["type"] == "channelError"
    assert frame["error"]["title"] == "struck"


@pytest.mark.parametrize("how", ["instanceReference", "empty query"])
def test_a_prediction_that_selects_its_model_without_a_name_is_recorded_and_unloaded(
    emu: LMStudioEmulator, how: str
) -> None:
    # Found by a probe: a prediction by instance reference (every respond() of the
    # TypeScript SDK's handles) or by an empty query was recorded with model "", and an
    # unload fault for it unloaded nothing (the handle's prediction succeeded).
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}

    def predict(ws: Any, specifier: dict[str, Any], channel_id: int) -> str:
        """Return how the prediction ended: "channelError" or "channelClose"."""
        parameter = {"modelSpecifier": specifier, "history": history}
        parameter["predictionConfigStack"] = {"layers": []}
        create = {"type": "channelCreate", "endpoint": "predict", "channelId": channel_id}
        ws.send(json.dumps({**create, "creationParameter": parameter}))
        while True:
            end = str(json.loads(ws.recv(timeout=5))["type"])
            if end in ("channelError", "channelClose"):
                return end

    with raw_socket(emu, "llm") as ws:
        query = {"type": "query", "query": {"identifier": TEXT}}
        info = raw_rpc(ws, "getModelInfo", 0, {"specifier": query, "throwIfNotFound": True})
        reference = {
            "type": "instanceReference",
            "instanceReference": info["result"]["instanceReference"],
        }
        specifier = reference if how == "instanceReference" else {"type": "query", "query": {}}
        assert predict(ws, specifier, 1) == "channelClose"
        assert emu.predictions[-1].model == TEXT
        emu.add_fault(Fault("predict", "unload"))
        end = predict(ws, specifier, 2)
        if how == "instanceReference":  # an empty query then selects another loaded model
            assert end == "channelError"
        loaded = raw_rpc(ws, "listLoaded", 3)["result"]
    assert TEXT not in [m["identifier"] for m in loaded]
