"""The ``predict`` channel: respond / complete, streamed in fragments."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._engine import Fragment, PromptProgress
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._lookup import (
    engine_for,
    resolve,
    specifier_name,
)
from outlines_lmstudio.testing._records import Prediction
from outlines_lmstudio.testing._state import EmulatorState, Peer
from outlines_lmstudio.testing._tag_parsing import TagParser, request_tags
from outlines_lmstudio.testing._tools import (
    ToolCall,
    tool_call_packets,
    tool_definitions,
    with_id,
)
from outlines_lmstudio.testing._wire import (
    Channel,
    ConnectionDropped,
    RequestError,
    acquire_unless_cancelled,
    server_error,
)

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import EmulatedModel, Instance
    from outlines_lmstudio.testing._engine import Engine, Generation
    from outlines_lmstudio.testing._records import Upload

__all__ = ["complete_raw_text", "draft_model", "held_upload", "merge_config", "predict"]

_SENT_COUNTS = frozenset({"predictedTokensCount", "totalTokensCount"})
"""Token counts an engine keeps that a prediction stopped early reports as sent instead."""

NO_IMAGES = "Model does not support images. Please use a model that does."


def _raw_text_layer() -> dict[str, Any]:
    """Return the layer the Python SDK adds for ``complete()``.

    Its template writes the messages' text as it is, with no BOS or EOS text and no stop
    strings of its own.
    """
    template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    jinja = {"bosToken": "", "eosToken": "", "template": template}
    value = {"type": "jinja", "jinjaPromptTemplate": jinja, "stopStrings": []}
    field = {"key": "llm.prediction.promptTemplate", "value": value}
    return {"layerName": "completeModeFormatting", "config": {"fields": [field]}}


def merge_config(parameter: dict[str, Any]) -> dict[str, Any]:
    """Merge the KV fields of ``predictionConfigStack`` (later layers win)."""
    merged: dict[str, Any] = {}
    stack = parameter.get("predictionConfigStack") or {}
    for layer in stack.get("layers", []):
        for item in (layer.get("config") or {}).get("fields", []):
            if isinstance(item, dict) and "key" in item:
                merged[item["key"]] = item.get("value")
    return merged


def held_upload(conn: Peer, ident: str, suggestion: str | None = None) -> Upload:
    """Return the upload ``ident``, whichever client uploaded it.

    Any client may use a file another one uploaded, as long as that client is connected
    (inferred, docs/testing.md): LM Studio keeps uploads in one folder, by name, and
    Outlines' own LM Studio model uploads with the SDK's default client and predicts with
    the user's (found by a probe running Outlines' tests: the emulator refused that). The
    files of a client go when it disconnects (`_release_client`).

    Raises
    ------
    RequestError
        If there is no such upload, or its client has disconnected ("File not found").
    """
    with conn.emu._lock:
        upload = conn.emu._files.get(ident)
    if upload is None:
        extra = {} if suggestion is None else {"suggestion": suggestion}
        raise server_error(
            f"File not found: {ident}",
            cause="Uploaded files go when the client that uploaded them disconnects.",
            **extra,
        )
    return upload


def _images(conn: Peer, record: Prediction) -> bool:
    """Collect the uploaded files of the history; return whether any is an image."""
    has_image = False
    for message in record.messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict) or part.get("type") != "file":
                continue
            upload = held_upload(
                conn,
                str(part.get("identifier")),
                suggestion="Upload the file again, with a client that stays connected.",
            )
            record.images.append(upload.data)
            has_image = has_image or upload.file_type == "image"
    return has_image


_PROGRESS_EVERY = 0.25
"""Longest gap between prompt-processing progress reports (seconds)."""


def _prompt_progress(progress: float, counts: PromptProgress) -> dict[str, Any]:
    """Build a ``promptProcessingProgress`` packet (the 2.x SDK needs its ``details``)."""
    details = {
        "cachedTokenCount": counts.cached,
        "totalPromptTokenCount": counts.total,
        "processedPromptTokenCount": counts.processed,
        "unprocessedPromptTokenCount": counts.total - counts.cached - counts.processed,
    }
    return {"type": "promptProcessingProgress", "progress": progress, "details": details}


def _in_use(emu: EmulatorState, instance: Instance) -> bool:
    """Mark ``instance`` used now (its time-to-live counts from here); False if unloaded.

    A model unloaded while it generates (by a client, `LMStudioEmulator.unload`, its TTL
    or a JIT load) ends the prediction, which LM Studio reports as ``modelUnloaded``.
    """
    with emu._lock:
        loaded = emu._catalogue.instances.get(instance.identifier) is instance
        if loaded:
            instance.last_used = time.time()
        return loaded


async def _strike(conn: Peer, fault: Fault, cancelled: asyncio.Event) -> None:
    """Apply a fault, before the reply or mid-stream (after some fragments).

    A ``delay`` ends early when ``cancelled`` is set: the request is then stopped at once,
    as LM Studio stops one cancelled while it processes the prompt, instead of waiting the
    delay out (and, before the reply, drawing a scripted reply meant for a later request).
    """
    if fault.kind == "error":
        raise server_error(fault.message)
    if fault.kind == "drop":
        conn.abort()
        raise ConnectionDropped
    if fault.kind == "hang":
        await asyncio.Event().wait()
    if fault.kind == "delay":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cancelled.wait(), fault.seconds)


async def predict(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """Serve one prediction; always ends with ``success`` or ``channelError``.

    Or with its connection: a client that goes away mid-reply (closed, killed), or an
    emulator that stops, leaves its record ``done`` and ``disconnected``.
    """
    from websockets.exceptions import ConnectionClosed

    emu = conn.emu
    config = merge_config(parameter)
    structured = config.get("llm.prediction.structured")
    if not isinstance(structured, dict) or structured.get("type") == "none":
        structured = None
    history = parameter.get("history") or {}
    record = Prediction(
        model=specifier_name(emu, conn.namespace, parameter.get("modelSpecifier")),
        messages=list(history.get("messages", [])),
        config=config,
        structured=structured,
        preset=parameter.get("fuzzyPresetIdentifier"),
        client_id=conn.client_id,
        cancel_event=channel.cancel_event,
    )
    with emu._lock, emu._recorder.lock:  # as `reset` clears them: its epoch and records agree
        record._epoch = emu._epoch
        emu._recorder.predictions.append(record)
    emu._channel_records[(id(conn), channel.id)] = record
    try:
        await _serve(conn, channel, parameter, fault, record)
    except RequestError as exc:
        record.error = str(exc.error.get("title"))
        record.done = True  # before sending: the client may look as soon as it arrives
        await conn.channel_error(channel, exc.error)
    except (ConnectionClosed, ConnectionDropped, asyncio.CancelledError):
        if not record.done:  # nothing more can be sent: it ends here, and says why
            record.disconnected = True
            record.done = True
        raise
    finally:
        emu._channel_records.pop((id(conn), channel.id), None)


async def _serve(
    conn: Peer,
    channel: Channel,
    parameter: dict[str, Any],
    fault: Fault | None,
    record: Prediction,
) -> None:
    emu = conn.emu
    if fault is not None and fault.kind == "unload":
        emu._unload_names((record.model,), conn.namespace)
        fault = None
    instance = resolve(conn, parameter.get("modelSpecifier"))
    if fault is not None and fault.after_fragments == 0:
        await _strike(conn, fault, channel.cancel_event)
        fault = None
        if not channel.cancel_event.is_set() and not _in_use(emu, instance):
            # Its model was unloaded meanwhile (a client, a TTL, or a test's `reset`
            # reloading every instance; found by a review: after a reset it took a slot
            # of the new instance and generated there): LM Studio ends the prediction.
            stats = {"stopReason": "modelUnloaded", "promptTokensCount": 0}
            await _succeed(conn, channel, instance, record, stats)
            return
    preset = record.preset
    if preset is not None and emu.presets is not None and preset not in emu.presets:
        raise RequestError(
            {
                "title": f'Cannot find a preset with identifier "{preset}"',
                "displayData": {
                    "code": "generic.presetNotFound",
                    "specifiedFuzzyPresetIdentifier": preset,
                    "availablePresetsSample": [
                        {"identifier": p, "name": p} for p in list(emu.presets)[:10]
                    ],
                    "totalAvailablePresets": len(emu.presets),
                },
            }
        )
    if _images(conn, record) and not instance.model.vision:
        raise server_error(NO_IMAGES)
    structured = record.structured
    is_gbnf = structured is not None and structured.get("type") == "gbnf"
    if is_gbnf and instance.model.format != "gguf":
        # Inferred: only llama.cpp engines take GBNF; LM Studio's wording is not verified.
        raise server_error(
            "GBNF grammars need a model on a llama.cpp engine (a GGUF model); "
            f"{instance.identifier!r} is a {instance.model.format} model",
            suggestion='Use {"type": "json", "jsonSchema": ...}, or load a GGUF model.',
        )
    draft = _draft_model(emu, instance, record.config)
    engine = engine_for(emu, instance)
    if emu._log_listeners:
        await _log_input(emu, engine, instance, record, parameter.get("rawPrompt"))
    with emu._busy("queued", instance):
        # The engine draws the reply (takes a scripted one) only when its fragments are
        # first iterated, after the prompt: a request cancelled before (in a delay fault,
        # waiting for a slot, processing its prompt) leaves the script to the next one.
        generation = await engine.generate(record)
        slot = emu._slot(instance)
        if not await acquire_unless_cancelled(slot, channel.cancel_event):
            # Cancelled while it waited for a free slot (or in a delay fault): it leaves
            # the queue at once.
            await generation.fragments.aclose()
            record.cancelled = True
            stats = {"stopReason": "userStopped", "promptTokensCount": generation.prompt_tokens}
            await _succeed(conn, channel, instance, record, stats)
            return
        emu._enter(instance, record)
        try:
            with emu._busy("generating", instance):
                await _stream(conn, channel, instance, record, generation, fault, draft)
        finally:
            emu._leave(instance, record)
            slot.release()


async def _log_input(
    emu: EmulatorState, engine: Engine, instance: Instance, record: Prediction, raw: Any
) -> None:
    """Log the prediction's input for ``streamLogs`` (``llm.prediction.input``).

    Inferred (the SDK's schema names the fields, not their content): the input is the
    prompt the model reads, the history rendered with the model's template, or a
    completion's raw prompt as it is. Only the input event is sent: the 1.5.0 SDK's
    schema (``diagnosticsLogEventDataSchema``) knows no other, and that SDK drops a packet
    its schema refuses and answers with a ``communicationWarning``; 2.0.0's
    ``llm.prediction.output`` is left out for that reason.
    """
    if isinstance(raw, str):
        text = raw
    else:
        tools = tool_definitions(record.config)
        opts = {"toolDefinitions": tools} if tools else {}
        text = await engine.apply_prompt_template(record.messages, opts)
    emu._publish_log(
        {
            "type": "llm.prediction.input",
            "modelPath": instance.model.path,
            "modelIdentifier": instance.identifier,
            "input": text,
        }
    )


def _draft_model(
    emu: EmulatorState, instance: Instance, config: dict[str, Any]
) -> EmulatedModel | None:
    """Return the draft model of a speculative-decoding request (``draftModel``), or None."""
    name = config.get("llm.prediction.speculativeDecoding.draftModel")
    if not isinstance(name, str) or not name:
        return None
    return draft_model(emu, instance, name)


def draft_model(emu: EmulatorState, instance: Instance, name: str) -> EmulatedModel:
    """Return the model ``name`` as a draft model for ``instance``.

    Inferred (LM Studio's checks and their wording are not verified): the draft model must
    be a downloaded LLM on the same engine as the model it drafts for. One LM Studio does
    not have is said in its words (lmstudio-js's own speculative decoding test expects
    ``Cannot find model "<name>"``).

    Raises
    ------
    RequestError
        If there is no such model, or it cannot draft for ``instance``.
    """
    with emu._lock:
        draft = emu._catalogue.find_model(name)
    if draft is None:
        raise server_error(
            f'Cannot find model "{name}"',
            suggestion="Choose a draft model among the downloaded LLMs (lms ls).",
        )
    if draft.type != "llm":
        raise server_error(
            f"Cannot use {name!r} as a draft model: it is not an LLM",
            suggestion="Choose a smaller LLM of the same family as the draft model.",
        )
    if draft.format != instance.model.format:
        raise server_error(
            f"Cannot use {name!r} ({draft.format}) as a draft model for "
            f"{instance.identifier!r} ({instance.model.format}): "
            "a draft model must run on the same engine",
            suggestion="Choose a draft model of the same format as the main model.",
        )
    return draft


def _is_drafted(index: int) -> bool:
    """Whether fragment ``index`` came from accepted draft tokens (synthetic: every other one)."""
    return index % 2 == 1


async def _process_prompt(
    conn: Peer, channel: Channel, instance: Instance, generation: Generation
) -> bool:
    """Report prompt processing from 0 to 1; return False if the model was unloaded.

    For an engine that processes no prompt of its own (the synthetic one): it takes
    ``prompt_latency``, reported at least every `_PROGRESS_EVERY` seconds.
    """
    emu = conn.emu
    steps = max(1, math.ceil(emu.prompt_latency / _PROGRESS_EVERY))
    total = generation.prompt_tokens
    for step in range(steps + 1):
        if channel.cancelled:
            break
        if not _in_use(emu, instance):
            return False
        progress = step / steps
        counts = PromptProgress(total, processed=round(progress * total))
        await conn.channel_send(channel, _prompt_progress(progress, counts))
        if step < steps and emu.prompt_latency:
            await asyncio.sleep(emu.prompt_latency / steps)
    return True


class _Unloaded(Exception):
    """Raised into an engine that processes its prompt: its model was unloaded meanwhile."""


class _EngineProgress:
    """Sends the progress an engine reports while it processes the prompt itself.

    The prompt counts as being processed (``processingPrompt``) from the first report
    to the last (progress 1); `close` ends that if the engine stops before.
    """

    def __init__(self, conn: Peer, channel: Channel, instance: Instance) -> None:
        self._conn = conn
        self._channel = channel
        self._instance = instance
        self._state = contextlib.ExitStack()
        self._processing = False

    async def __call__(self, counts: PromptProgress) -> None:
        """Send one report.

        Raises
        ------
        _Unloaded
            If the model was unloaded: the engine stops, and the prediction ends
            ``modelUnloaded``.
        """
        emu = self._conn.emu
        if not _in_use(emu, self._instance):
            raise _Unloaded
        progress = counts.progress
        if progress < 1 and not self._processing:
            self._state.enter_context(emu._busy("prompt", self._instance))
            self._processing = True
        if not self._channel.cancelled:
            await self._conn.channel_send(self._channel, _prompt_progress(progress, counts))
        if progress >= 1:
            self.close()

    def close(self) -> None:
        """End the prompt's processing state, if it is still on."""
        self._state.close()
        self._processing = False


async def _stream(
    conn: Peer,
    channel: Channel,
    instance: Instance,
    record: Prediction,
    generation: Generation,
    fault: Fault | None,
    draft: EmulatedModel | None = None,
) -> None:
    emu = conn.emu
    start = time.monotonic()
    # Prompt processing: progress from 0 to 1, reported as it goes (as LM Studio does):
    # by an engine that processes the prompt itself (the llama.cpp engine) when its
    # fragments are first iterated, else here, at least every quarter second of
    # `prompt_latency`.
    engine_progress = _EngineProgress(conn, channel, instance)
    if generation.processes_prompt:
        generation.on_progress = engine_progress
        unloaded = False
    else:
        with emu._busy("prompt", instance):
            unloaded = not await _process_prompt(conn, channel, instance, generation)
    first: float | None = None
    predicted = 0
    drafted = 0  # tokens of accepted draft fragments
    sent = 0
    due = time.monotonic()  # when the engine has the next fragment ready
    # A request's own reasoning strings type the reply as LM Studio types it (`_tag_parsing`):
    # a token may then go out as several pieces, sent together, at the token's pace.
    parser = None if (tags := request_tags(record.config)) is None else TagParser(*tags)
    try:
        # A prompt cancelled or unloaded never reaches the engine: it draws no reply.
        if not unloaded and not channel.cancel_event.is_set():
            async for token in generation.fragments:
                if fault is not None and sent == fault.after_fragments:
                    await _strike(conn, fault, channel.cancel_event)
                due = await _pace(conn, due)
                if channel.cancelled:
                    break
                if not _in_use(emu, instance):
                    unloaded = True  # LM Studio ends the prediction: stopReason "modelUnloaded"
                    break
                drafted_token = draft is not None and _is_drafted(sent)
                pieces = [token] if parser is None else parser.feed(token)
                for piece in pieces:
                    await _send_fragment(conn, channel, record, piece, drafted=drafted_token)
                if drafted_token:
                    drafted += token.tokens_count
                sent += 1
                predicted += token.tokens_count
                if first is None and pieces:
                    first = time.monotonic()
            else:
                for piece in [] if parser is None else parser.flush():
                    await _send_fragment(conn, channel, record, piece, drafted=False)
                if fault is not None and sent <= fault.after_fragments:
                    await _strike(conn, fault, channel.cancel_event)
    except _Unloaded:  # while the engine processed the prompt
        unloaded = True
    finally:
        engine_progress.close()
        # Stops the engine when we leave early (cancel, fault, dropped connection).
        await generation.fragments.aclose()
    stop_reason = generation.stop_reason
    if generation.tool_call is not None and not channel.cancelled and not unloaded:
        call = with_id(generation.tool_call)
        tokens, ended = await _stream_tool_call(conn, channel, instance, call, due)
        predicted += tokens
        if ended:
            record.tool_calls.append(call)
        unloaded = ended is None
    if unloaded:
        stop_reason = "modelUnloaded"
    elif channel.cancelled:
        stop_reason = "userStopped"
        record.cancelled = True
        predicted += generation.held_tokens  # decoded, held for a stop string
    end = time.monotonic()
    prompt_tokens = generation.prompt_tokens
    stats: dict[str, Any] = {
        "stopReason": stop_reason,
        "promptTokensCount": prompt_tokens,
        "predictedTokensCount": predicted,
        "totalTokensCount": prompt_tokens + predicted,
        "totalTimeSec": end - start,
        "numGpuLayers": 0,  # LM Studio sends it (lmstudio-js's tests); the emulator uses no GPU
    }
    if draft is not None:
        # Synthetic counts: each fragment the draft model did not give stands for one
        # rejected draft token, and none is ignored.
        rejected = sent - sum(_is_drafted(i) for i in range(sent))
        stats.update(
            usedDraftModelKey=draft.key,
            totalDraftTokensCount=drafted + rejected,
            acceptedDraftTokensCount=drafted,
            rejectedDraftTokensCount=rejected,
            ignoredDraftTokensCount=0,
        )
    engine_stats = generation.stats
    if unloaded or channel.cancelled:
        # Stopped here, after the engine had counted a token more than was sent (found by
        # a probe: 4 predicted for 3 sent): the counts are what was sent.
        engine_stats = {k: v for k, v in engine_stats.items() if k not in _SENT_COUNTS}
    stats.update(engine_stats)
    if generation.first_token_at is not None:  # the engine's first token, not our first send
        first = generation.first_token_at
    if first is not None:  # unless the engine measured them itself
        stats.setdefault("timeToFirstTokenSec", first - start)
        stats.setdefault("tokensPerSecond", stats["predictedTokensCount"] / max(end - first, 1e-6))
    if stop_reason != "stopStringFound":
        # LM Studio names the stop string only when one ended the reply (lmstudio-js #521).
        stats.pop("stopString", None)
    await _succeed(conn, channel, instance, record, stats)


async def _pace(conn: Peer, due: float) -> float:
    """Wait for the engine's next token, due at ``due``; return when the one after is due.

    The engine's own pace: it makes a token every ``token_latency`` seconds, and a send that
    was late (other predictions, a busy machine) does not push the later ones back, as LM
    Studio's engine does not wait for its websocket. A late token still yields, so a waiting
    cancel is read. At no latency, a waiting cancel is read between tokens, as LM Studio
    does (pausing only every few tokens let 4 in 60 sync cancels arrive too late).
    """
    if not conn.emu.token_latency:
        await conn.pause()
        return due
    due += conn.emu.token_latency
    await asyncio.sleep(due - time.monotonic())
    return due


async def _stream_tool_call(
    conn: Peer, channel: Channel, instance: Instance, call: ToolCall, due: float
) -> tuple[int, bool | None]:
    """Stream a tool call (`tool_call_packets`), its arguments a token at a time.

    At the engine's pace, as LM Studio streams them (found by a probe: they came in one
    burst, after the reply's text, so a cancel or an unload never reached them).

    Returns
    -------
    tuple[int, bool | None]
        The argument tokens sent, and how the call ended: ``True`` sent whole, ``False``
        cancelled, ``None`` its model unloaded (no ``toolCallGenerationEnd`` for either).
    """
    start, name, *arguments, end = tool_call_packets(call)
    await conn.channel_send(channel, start)
    await conn.channel_send(channel, name)
    for sent, packet in enumerate(arguments):
        due = await _pace(conn, due)
        if channel.cancelled:
            return sent, False
        if not _in_use(conn.emu, instance):
            return sent, None
        await conn.channel_send(channel, packet)
    await conn.channel_send(channel, end)
    return len(arguments), True


async def _send_fragment(
    conn: Peer, channel: Channel, record: Prediction, piece: Fragment, *, drafted: bool
) -> None:
    """Send one ``fragment`` of a reply, and record its text."""
    fragment = {
        "content": piece.content,
        "tokensCount": piece.tokens_count,
        "containsDrafted": drafted,
        "reasoningType": piece.reasoning_type,
        "isStructural": piece.is_structural,
    }
    await conn.channel_send(channel, {"type": "fragment", "fragment": fragment})
    record.fragments.append(piece.content)
    record.text += piece.content


async def _succeed(
    conn: Peer, channel: Channel, instance: Instance, record: Prediction, stats: dict[str, Any]
) -> None:
    """Send the terminal ``success`` packet with ``stats``."""
    success = {
        "type": "success",
        "stats": stats,
        "modelInfo": instance.info(),
        "loadModelConfig": instance.load_config(),
        "predictionConfig": {"fields": [{"key": k, "value": v} for k, v in record.config.items()]},
    }
    record.stop_reason = stats["stopReason"]
    record.done = True  # before sending: the client may look as soon as it arrives
    await conn.channel_send(channel, success)


async def complete_raw_text(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """Serve ``completeRawText`` (the 2.x SDK's ``complete()``): the raw prompt, no template.

    The prompt becomes one user message read through the pass-through template the Python
    SDK's ``complete()`` sends (a last ``completeModeFormatting`` layer), so no engine wraps
    it in the model's chat template.
    """
    raw = parameter.get("rawPrompt")
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": str(raw)}]}]}
    stack = parameter.get("predictionConfigStack")
    layers = stack.get("layers") if isinstance(stack, dict) else None
    layers = [*(layers if isinstance(layers, list) else []), _raw_text_layer()]
    raw_parameter = {**parameter, "history": history, "predictionConfigStack": {"layers": layers}}
    await predict(conn, channel, raw_parameter, fault)
