"""The ``predict`` channel: respond / complete, streamed in fragments."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._lookup import query_of, resolve
from outlines_lmstudio.testing._records import Prediction, message_text
from outlines_lmstudio.testing._sampler import (
    SchemaError,
    count_tokens,
    plain_text,
    split_fragments,
)
from outlines_lmstudio.testing._state import Peer
from outlines_lmstudio.testing._tools import (
    ToolCall,
    awaits_tool_call,
    default_tool_call,
    offered_tools,
    tool_call_packets,
    tool_results,
)
from outlines_lmstudio.testing._wire import (
    Channel,
    ConnectionDropped,
    RequestError,
    server_error,
)

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance

__all__ = ["complete_raw_text", "merge_config", "predict"]

NO_IMAGES = "Model does not support images. Please use a model that does."


def merge_config(parameter: dict[str, Any]) -> dict[str, Any]:
    """Merge the KV fields of ``predictionConfigStack`` (later layers win)."""
    merged: dict[str, Any] = {}
    stack = parameter.get("predictionConfigStack") or {}
    for layer in stack.get("layers", []):
        for item in (layer.get("config") or {}).get("fields", []):
            if isinstance(item, dict) and "key" in item:
                merged[item["key"]] = item.get("value")
    return merged


def _seed_for(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    # "surrogatepass": a prompt may hold a lone surrogate (JSON allows "\ud800").
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def _cut(tokens: list[str], config: dict[str, Any]) -> tuple[list[str], str]:
    """Apply stop strings and the token limit, as a model would while generating."""
    stops = [s for s in config.get("llm.prediction.stopStrings") or [] if isinstance(s, str) and s]
    limit = config.get("llm.prediction.maxPredictedTokens")
    max_tokens: int | None = None
    if isinstance(limit, dict) and limit.get("checked") and isinstance(limit.get("value"), int):
        max_tokens = max(0, int(limit["value"]))
    out: list[str] = []
    text = ""
    for token in tokens:
        if max_tokens is not None and len(out) >= max_tokens:
            return out, "maxPredictedTokensReached"
        text += token
        out.append(token)
        found = [
            i
            for i in (text.find(s, max(0, len(text) - len(token) - len(s))) for s in stops)
            if i >= 0
        ]
        if found:
            # Like llama.cpp, text that may start a stop string is held back, so
            # the cut can fall inside a fragment sent "earlier".
            return _prefix(out, min(found)), "stopStringFound"
    return out, "eosFound"


def _prefix(tokens: list[str], length: int) -> list[str]:
    """Return the tokens covering the first ``length`` characters (the last one trimmed)."""
    kept: list[str] = []
    used = 0
    for token in tokens:
        if used + len(token) >= length:
            if length > used:
                kept.append(token[: length - used])
            return kept
        kept.append(token)
        used += len(token)
    return kept


def _images(conn: Peer, record: Prediction) -> bool:
    """Collect the uploaded files of the history; return whether any is an image."""
    has_image = False
    for message in record.messages:
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict) or part.get("type") != "file":
                continue
            ident = str(part.get("identifier"))
            with conn.emu._lock:
                upload = conn.emu._files.get(ident)
            if upload is None or upload.client_id != conn.client_id:
                raise server_error(
                    f"File not found: {ident}",
                    cause="File handles belong to the client that uploaded them.",
                    suggestion="Upload the file with the same client that sends the prediction.",
                )
            record.images.append(upload.data)
            has_image = has_image or upload.file_type == "image"
    return has_image


async def _reply(
    conn: Peer, instance: Instance, record: Prediction
) -> tuple[list[str], ToolCall | None]:
    """Return the reply's text fragments, and the tool call that follows them (if any)."""
    emu = conn.emu
    script = emu._next_reply(instance)
    if script is not None:
        try:
            reply = script(record) if callable(script) else script
        except Exception as exc:
            raise server_error(f"Scripted reply failed: {exc!r}") from exc
        if isinstance(reply, ToolCall):
            return split_fragments(reply.text), reply
        return split_fragments(str(reply)), None
    tools = offered_tools(record.config)
    wants_tool = tools and instance.model.tool_use and record.structured is None
    if wants_tool and awaits_tool_call(record.messages):
        rng = random.Random(_seed_for(emu.seed, record.messages, tools))
        try:
            call = default_tool_call(tools, record.last_user_text, emu._sampler.sample, rng)
        except SchemaError as exc:
            raise server_error(
                f"Failed to build a grammar for the tool's parameters: {exc}"
            ) from exc
        return split_fragments(call.text), call
    results = tool_results(record.messages)
    if results and record.structured is None:
        # A simple model reports what the tool returned, then goes on.
        answer = f"The tool returned {'; '.join(results)}. "
        return split_fragments(answer) + await _reply_tokens(conn, instance, record), None
    return await _reply_tokens(conn, instance, record), None


async def _reply_tokens(conn: Peer, instance: Instance, record: Prediction) -> list[str]:
    emu = conn.emu
    structured = record.structured
    if structured is not None and structured.get("type") == "json":
        schema = structured.get("jsonSchema")
        rng = random.Random(_seed_for(emu.seed, record.messages, schema))
        try:
            if emu._sampler.is_cached(schema):
                return emu._sampler.sample(schema, rng)
            return await asyncio.to_thread(emu._sampler.sample, schema, rng)
        except SchemaError as exc:
            raise server_error(f"Failed to build a grammar for the JSON schema: {exc}") from exc
    if structured is not None and structured.get("type") == "gbnf":
        from outlines_lmstudio.testing._gbnf import GrammarError, sample_gbnf

        rng = random.Random(_seed_for(emu.seed, record.messages, structured))
        try:
            return split_fragments(sample_gbnf(str(structured.get("gbnfGrammar", "")), rng))
        except GrammarError as exc:
            raise server_error(f"Failed to parse the GBNF grammar: {exc}") from exc
    return plain_text(json.dumps(record.messages, sort_keys=True), emu.seed)


def _prompt_progress(progress: float, prompt_tokens: int) -> dict[str, Any]:
    """Build a ``promptProcessingProgress`` packet (the 2.x SDK needs its ``details``)."""
    processed = round(progress * prompt_tokens)
    details = {
        "cachedTokenCount": 0,
        "totalPromptTokenCount": prompt_tokens,
        "processedPromptTokenCount": processed,
        "unprocessedPromptTokenCount": prompt_tokens - processed,
    }
    return {"type": "promptProcessingProgress", "progress": progress, "details": details}


async def _strike(conn: Peer, fault: Fault) -> None:
    """Apply a fault that strikes mid-stream (after some fragments)."""
    if fault.kind == "error":
        raise server_error(fault.message)
    if fault.kind == "drop":
        conn.abort()
        raise ConnectionDropped
    if fault.kind == "hang":
        await asyncio.Event().wait()
    if fault.kind == "delay":
        await asyncio.sleep(fault.seconds)


async def predict(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """Serve one prediction; always ends with ``success`` or ``channelError``."""
    emu = conn.emu
    config = merge_config(parameter)
    structured = config.get("llm.prediction.structured")
    if not isinstance(structured, dict) or structured.get("type") == "none":
        structured = None
    history = parameter.get("history") or {}
    record = Prediction(
        model=str(query_of(parameter.get("modelSpecifier")).get("identifier", "")),
        messages=list(history.get("messages", [])),
        config=config,
        structured=structured,
        preset=parameter.get("fuzzyPresetIdentifier"),
        client_id=conn.client_id,
    )
    with emu._recorder.lock:
        emu._recorder.predictions.append(record)
    emu._channel_records[(id(conn), channel.id)] = record
    try:
        await _serve(conn, channel, parameter, fault, record)
    except RequestError as exc:
        record.error = str(exc.error.get("title"))
        record.done = True  # before sending: the client may look as soon as it arrives
        await conn.channel_error(channel, exc.error)
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
    if fault is not None and (fault.after_fragments == 0 or fault.kind == "unload"):
        if fault.kind == "unload":
            emu._unload_names((record.model,), conn.namespace)
        else:
            await _strike(conn, fault)
        fault = None
    instance = resolve(conn, parameter.get("modelSpecifier"))
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
    text_tokens, tool_call = await _reply(conn, instance, record)
    tokens, stop_reason = _cut(text_tokens, record.config)
    if tool_call is not None and stop_reason == "eosFound":
        stop_reason = "toolCalls"
    else:
        tool_call = None  # cut short before the call was written
    prompt_tokens = count_tokens(" ".join(message_text(m) for m in record.messages))
    async with emu._slot(instance):
        emu._enter(instance)
        try:
            await _stream(
                conn,
                channel,
                instance,
                record,
                tokens,
                stop_reason,
                prompt_tokens,
                fault,
                tool_call=tool_call,
            )
        finally:
            emu._leave(instance)


async def _stream(
    conn: Peer,
    channel: Channel,
    instance: Instance,
    record: Prediction,
    tokens: list[str],
    stop_reason: str,
    prompt_tokens: int,
    fault: Fault | None,
    *,
    tool_call: ToolCall | None = None,
) -> None:
    emu = conn.emu
    start = time.monotonic()
    if emu.prompt_latency:
        await asyncio.sleep(emu.prompt_latency)
    if not channel.cancelled:
        for progress in (0.0, 1.0):
            await conn.channel_send(channel, _prompt_progress(progress, prompt_tokens))
    first: float | None = None
    for i, token in enumerate(tokens):
        if fault is not None and i == fault.after_fragments:
            await _strike(conn, fault)
        if emu.token_latency:
            await asyncio.sleep(emu.token_latency)
        else:
            await conn.pause()  # read a waiting cancel between fragments, as LM Studio does
        if channel.cancelled:
            break
        fragment = {
            "content": token,
            "tokensCount": 1,
            "containsDrafted": False,
            "reasoningType": "none",
            "isStructural": False,
        }
        await conn.channel_send(channel, {"type": "fragment", "fragment": fragment})
        record.fragments.append(token)
        record.text += token
        if first is None:
            first = time.monotonic()
    else:
        if fault is not None and len(tokens) <= fault.after_fragments:
            await _strike(conn, fault)
    if tool_call is not None and not channel.cancelled:
        for packet in tool_call_packets(tool_call):
            await conn.channel_send(channel, packet)
        record.tool_calls.append(tool_call)
    if channel.cancelled:
        stop_reason = "userStopped"
        record.cancelled = True
    end = time.monotonic()
    predicted = len(record.fragments)
    stats: dict[str, Any] = {
        "stopReason": stop_reason,
        "promptTokensCount": prompt_tokens,
        "predictedTokensCount": predicted,
        "totalTokensCount": prompt_tokens + predicted,
    }
    if first is not None:
        stats["timeToFirstTokenSec"] = first - start
        stats["tokensPerSecond"] = predicted / max(end - first, 1e-6)
    success = {
        "type": "success",
        "stats": stats,
        "modelInfo": instance.info(),
        "loadModelConfig": instance.load_config(),
        "predictionConfig": {"fields": [{"key": k, "value": v} for k, v in record.config.items()]},
    }
    record.stop_reason = stop_reason
    record.done = True  # before sending: the client may look as soon as it arrives
    await conn.channel_send(channel, success)


async def complete_raw_text(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """Serve ``completeRawText`` (the 2.x SDK's ``complete()``): the raw prompt, no template."""
    raw = parameter.get("rawPrompt")
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": str(raw)}]}]}
    await predict(conn, channel, {**parameter, "history": history}, fault)
