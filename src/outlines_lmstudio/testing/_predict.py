"""The ``predict`` channel: respond / complete, streamed in fragments."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._endpoints import _query_of, format_prompt, resolve
from outlines_lmstudio.testing._engine import Fragment, Generation, engine_for
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._protocol import (
    Channel,
    Connection,
    ConnectionDropped,
    RequestError,
    server_error,
)
from outlines_lmstudio.testing._reasoning_forms import (
    ReasoningReply,
    plan_reasoning,
    shape_reply,
)
from outlines_lmstudio.testing._records import Prediction, message_text
from outlines_lmstudio.testing._sampler import (
    SchemaError,
    count_tokens,
    plain_text,
    split_fragments,
    token_ids,
)

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance
    from outlines_lmstudio.testing._server import LMStudioEmulator

__all__ = ["SyntheticEngine", "merge_config", "predict"]

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
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _cut(tokens: list[Fragment], config: dict[str, Any]) -> tuple[list[Fragment], str]:
    """Apply stop strings and the token limit, as a model would while generating."""
    stops = [s for s in config.get("llm.prediction.stopStrings") or [] if isinstance(s, str) and s]
    limit = config.get("llm.prediction.maxPredictedTokens")
    max_tokens: int | None = None
    if isinstance(limit, dict) and limit.get("checked") and isinstance(limit.get("value"), int):
        max_tokens = max(0, int(limit["value"]))
    out: list[Fragment] = []
    text = ""
    for token in tokens:
        if max_tokens is not None and len(out) >= max_tokens:
            return out, "maxPredictedTokensReached"
        text += token.content
        out.append(token)
        found = [
            i
            for i in (text.find(s, max(0, len(text) - len(token.content) - len(s))) for s in stops)
            if i >= 0
        ]
        if found:
            # Like llama.cpp, text that may start a stop string is held back, so
            # the cut can fall inside a fragment sent "earlier".
            return _prefix(out, min(found)), "stopStringFound"
    return out, "eosFound"


def _prefix(tokens: list[Fragment], length: int) -> list[Fragment]:
    """Return the tokens covering the first ``length`` characters (the last one trimmed)."""
    kept: list[Fragment] = []
    used = 0
    for token in tokens:
        if used + len(token.content) >= length:
            if length > used:
                kept.append(dataclasses.replace(token, content=token.content[: length - used]))
            return kept
        kept.append(token)
        used += len(token.content)
    return kept


def _images(conn: Connection, record: Prediction) -> bool:
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


def _fragments(tokens: list[str]) -> list[Fragment]:
    return [Fragment(token) for token in tokens]


async def _reply_tokens(
    emu: LMStudioEmulator, instance: Instance, record: Prediction
) -> list[Fragment] | ReasoningReply:
    script = emu._next_reply(instance)
    if script is not None:
        try:
            text = script(record) if callable(script) else script
        except Exception as exc:
            raise server_error(f"Scripted reply failed: {exc!r}") from exc
        if isinstance(text, ReasoningReply):
            return text
        return _fragments(split_fragments(str(text)))
    structured = record.structured
    if structured is not None and structured.get("type") == "json":
        schema = structured.get("jsonSchema")
        rng = random.Random(_seed_for(emu.seed, record.messages, schema))
        try:
            if emu._sampler.is_cached(schema):
                return _fragments(emu._sampler.sample(schema, rng))
            return _fragments(await asyncio.to_thread(emu._sampler.sample, schema, rng))
        except SchemaError as exc:
            raise server_error(f"Failed to build a grammar for the JSON schema: {exc}") from exc
    if structured is not None and structured.get("type") == "gbnf":
        from outlines_lmstudio.testing._gbnf import GrammarError, sample_gbnf

        rng = random.Random(_seed_for(emu.seed, record.messages, structured))
        try:
            text = sample_gbnf(str(structured.get("gbnfGrammar", "")), rng)
            return _fragments(split_fragments(text))
        except GrammarError as exc:
            raise server_error(f"Failed to parse the GBNF grammar: {exc}") from exc
    return _fragments(plain_text(json.dumps(record.messages, sort_keys=True), emu.seed))


async def _listed(fragments: list[Fragment]) -> AsyncGenerator[Fragment, None]:
    for fragment in fragments:
        yield fragment


class SyntheticEngine:
    """The synthetic engine: seeded text, sampled JSON and GBNF, scripted replies.

    Instant and deterministic; it has no language model. Tokens are the
    emulator's own word pieces (`outlines_lmstudio.testing._sampler`).
    """

    def __init__(self, emu: LMStudioEmulator, instance: Instance) -> None:
        self._emu = emu
        self._instance = instance

    async def generate(self, record: Prediction) -> Generation:
        """Produce the whole reply at once, cut by stop strings and the token limit.

        A reasoning model thinks first, in its reasoning form (`_reasoning_forms`).
        """
        answer, reasoning, form = plan_reasoning(
            await _reply_tokens(self._emu, self._instance, record),
            self._instance.model.reasoning,
            key=json.dumps(record.messages, sort_keys=True),
            seed=self._emu.seed,
        )
        tokens, stop_reason = _cut(answer, record.config)
        fragments, stop_reason = shape_reply(
            form, reasoning, tokens, stop_reason, record.config, structured=bool(record.structured)
        )
        prompt_tokens = count_tokens(" ".join(message_text(m) for m in record.messages))
        return Generation(_listed(fragments), stop_reason, prompt_tokens)

    async def tokenize(self, text: str) -> list[int]:
        """Return deterministic ids, one per word piece."""
        return token_ids(text)

    async def count_tokens(self, text: str) -> int:
        """Return the number of word pieces."""
        return count_tokens(text)

    async def apply_prompt_template(self, messages: list[dict[str, Any]]) -> str:
        """Render with a ChatML-style template."""
        return format_prompt(messages)

    async def embed(self, text: str) -> list[float]:
        """Return a deterministic unit vector derived from the model key and the text."""
        model = self._instance.model
        digest = hashlib.sha256(f"{model.key}\x00{text}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        vector = [rng.gauss(0.0, 1.0) for _ in range(model.embedding_dims)]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]


async def _strike(conn: Connection, fault: Fault) -> None:
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
    conn: Connection, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """Serve one prediction; always ends with ``success`` or ``channelError``."""
    emu = conn.emu
    config = merge_config(parameter)
    structured = config.get("llm.prediction.structured")
    if not isinstance(structured, dict) or structured.get("type") == "none":
        structured = None
    history = parameter.get("history") or {}
    record = Prediction(
        model=str(_query_of(parameter.get("modelSpecifier")).get("identifier", "")),
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
        await conn.channel_error(channel, exc.error)
        record.done = True
    finally:
        emu._channel_records.pop((id(conn), channel.id), None)


async def _serve(
    conn: Connection,
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
                "title": f"Preset {preset!r} not found",
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
    generation = await engine_for(emu, instance).generate(record)
    async with emu._slot(instance):
        emu._enter(instance)
        try:
            await _stream(conn, channel, instance, record, generation, fault)
        finally:
            emu._leave(instance)


async def _stream(
    conn: Connection,
    channel: Channel,
    instance: Instance,
    record: Prediction,
    generation: Generation,
    fault: Fault | None,
) -> None:
    emu = conn.emu
    start = time.monotonic()
    if emu.prompt_latency:
        await asyncio.sleep(emu.prompt_latency)
    if not channel.cancelled:
        for progress in (0.0, 1.0):
            await conn.channel_send(
                channel, {"type": "promptProcessingProgress", "progress": progress}
            )
    first: float | None = None
    predicted = 0
    sent = 0
    try:
        async for token in generation.fragments:
            if fault is not None and sent == fault.after_fragments:
                await _strike(conn, fault)
            if emu.token_latency:
                await asyncio.sleep(emu.token_latency)
            if channel.cancelled:
                break
            fragment = {
                "content": token.content,
                "tokensCount": token.tokens_count,
                "containsDrafted": False,
                "reasoningType": token.reasoning_type,
            }
            await conn.channel_send(channel, {"type": "fragment", "fragment": fragment})
            record.fragments.append(token.content)
            record.text += token.content
            sent += 1
            predicted += token.tokens_count
            if first is None:
                first = time.monotonic()
        else:
            if fault is not None and sent <= fault.after_fragments:
                await _strike(conn, fault)
    finally:
        # Stops the engine when we leave early (cancel, fault, dropped connection).
        await generation.fragments.aclose()
    stop_reason = generation.stop_reason
    if channel.cancelled:
        stop_reason = "userStopped"
        record.cancelled = True
    end = time.monotonic()
    prompt_tokens = generation.prompt_tokens
    stats: dict[str, Any] = {
        "stopReason": stop_reason,
        "promptTokensCount": prompt_tokens,
        "predictedTokensCount": predicted,
        "totalTokensCount": prompt_tokens + predicted,
    }
    if first is not None:
        stats["timeToFirstTokenSec"] = first - start
        stats["tokensPerSecond"] = predicted / max(end - first, 1e-6)
    stats.update(generation.stats)
    success = {
        "type": "success",
        "stats": stats,
        "modelInfo": instance.info(),
        "loadModelConfig": instance.load_config(),
        "predictionConfig": {"fields": [{"key": k, "value": v} for k, v in record.config.items()]},
    }
    record.stop_reason = stop_reason
    await conn.channel_send(channel, success)
    record.done = True
