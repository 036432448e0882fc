"""Endpoint handlers: model bookkeeping RPCs, uploads, embeddings and model loading."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._lookup import engine_for, not_found, path_not_found, resolve
from outlines_lmstudio.testing._predict import (
    complete_raw_text,
    draft_model,
    held_upload,
    predict,
)
from outlines_lmstudio.testing._records import Upload
from outlines_lmstudio.testing._state import EmulatorState, Peer
from outlines_lmstudio.testing._wire import Channel, RequestError, server_error, wire_int

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import EmulatedModel, Instance

__all__ = ["CHANNEL_HANDLERS", "RPC_HANDLERS", "sniff_file_type"]

RpcHandler = Callable[[Peer, Any], Awaitable[Any]]
ChannelHandler = Callable[[Peer, Channel, dict[str, Any], Fault | None], Awaitable[None]]


# -- RPCs ---------------------------------------------------------------------------


async def list_loaded(conn: Peer, parameter: Any) -> Any:
    """``listLoaded``: the loaded instances of the namespace's domain."""
    with conn.emu._lock:
        return [i.info() for i in conn.emu._catalogue.loaded_of_type(conn.namespace)]


async def get_model_info(conn: Peer, parameter: Any) -> Any:
    """``getModelInfo``: the instance info (void when missing and not required)."""
    try:
        return resolve(conn, parameter.get("specifier")).info()
    except RequestError:
        if parameter.get("throwIfNotFound", True):
            raise
        return None


async def get_load_config(conn: Peer, parameter: Any) -> Any:
    """``getLoadConfig``: the KV config the instance was loaded with."""
    return resolve(conn, parameter.get("specifier")).load_config()


async def get_base_prediction_config(conn: Peer, parameter: Any) -> Any:
    """``getBasePredictionConfig`` (the 2.x SDK's ``getBasePredictionConfig()``).

    The instance's own prediction settings, which predictions start from. The emulator's
    models have none (an empty KV config): the SDK fills in its defaults.
    """
    resolve(conn, parameter.get("specifier"))
    return {"fields": []}


async def preload_draft_model(conn: Peer, parameter: Any) -> Any:
    """``preloadDraftModel`` (``model.unstable_preloadDraftModel(key)``): void.

    The emulator loads nothing ahead of time: it checks that the model could draft for the
    instance, with the checks (and errors) of a prediction's ``draftModel``.
    """
    instance = resolve(conn, parameter.get("specifier"))
    draft_model(conn.emu, instance, str(parameter.get("draftModelKey", "")))
    return None


async def tokenize(conn: Peer, parameter: Any) -> Any:
    """``tokenize``: the token ids of the model's engine."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    return {"tokens": await engine.tokenize(str(parameter.get("inputString", "")))}


async def count_tokens_rpc(conn: Peer, parameter: Any) -> Any:
    """``countTokens``: the number of tokens by the model's engine."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    return {"tokenCount": await engine.count_tokens(str(parameter.get("inputString", "")))}


async def unload_model(conn: Peer, parameter: Any) -> Any:
    """``unloadModel``: void, or noModelMatchingQuery for an unknown identifier."""
    identifier = parameter.get("identifier")
    with conn.emu._lock:
        instance = conn.emu._catalogue.find_instance(str(identifier))
        if instance is not None and instance.model.type == conn.namespace:
            conn.emu._catalogue.unload(instance.identifier)
            return None
    raise not_found(conn.emu, conn.namespace, {"identifier": identifier})


async def apply_prompt_template(conn: Peer, parameter: Any) -> Any:
    """``applyPromptTemplate``: the history rendered with the model's prompt template."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    history = parameter.get("history") or {}
    opts = parameter.get("opts")
    messages = list(history.get("messages", []))
    formatted = await engine.apply_prompt_template(messages, opts if isinstance(opts, dict) else {})
    return {"formatted": formatted}


async def embed_string(conn: Peer, parameter: Any) -> Any:
    """``embedString``: the embedding vector of the model's engine."""
    instance = resolve(conn, parameter.get("modelSpecifier"))
    engine = engine_for(conn.emu, instance)
    with conn.emu._busy("queued", instance), conn.emu._busy("embedding", instance):
        return {"embedding": await engine.embed(str(parameter.get("inputString", "")))}


async def get_instance_processing_state(conn: Peer, parameter: Any) -> Any:
    """``getInstanceProcessingState`` (2.x): what the instance is doing, and its queue."""
    return conn.emu._processing_state(resolve(conn, parameter.get("specifier")))


async def list_downloaded_models(conn: Peer, parameter: Any) -> Any:
    """``listDownloadedModels``: every model in the catalogue."""
    with conn.emu._lock:
        return [m.model_info() for m in conn.emu._catalogue.models.values()]


async def list_downloaded_model_variants(conn: Peer, parameter: Any) -> Any:
    """``listDownloadedModelVariants``: the variants of one model (each emulated model has one).

    A key the catalogue does not have fails, as LM Studio does for a key without variants.
    """
    key = str(parameter.get("modelKey", ""))
    with conn.emu._lock:
        model = conn.emu._catalogue.models.get(key)
        if model is not None:
            return [model.model_info()]
    raise path_not_found(conn.emu, key)


LMSTUDIO_VERSION = "0.4.19"
"""The version the emulator reports: the newest whose behaviour it models (reasoning closed by
the synthetic marker, and reasoning sent under a schema: `_reasoning_forms`). A model with the
``legacy`` form behaves as LM Studio did before it."""


async def version(conn: Peer, parameter: Any) -> Any:
    """``version``: a plausible LM Studio version."""
    return {"version": LMSTUDIO_VERSION, "build": 1}


async def system_info(conn: Peer, parameter: Any) -> Any:
    """``info`` (the 2.x SDK's ``system.getInfo()``): process id, daemon flag and version."""
    return {"pid": os.getpid(), "isDaemon": False, "version": LMSTUDIO_VERSION}


async def set_experiment_flag(conn: Peer, parameter: Any) -> Any:
    """``setExperimentFlag`` (``system.unstable_setExperimentFlag(code, value)``): void.

    Inferred: LM Studio keeps any flag it is told about; the emulator turns nothing on
    or off with them, it only remembers them (until `LMStudioEmulator.reset`).
    """
    code = str(parameter.get("code", ""))
    with conn.emu._lock:
        if parameter.get("value") is True:
            conn.emu._experiment_flags.add(code)
        else:
            conn.emu._experiment_flags.discard(code)
    return None


async def get_experiment_flags(conn: Peer, parameter: Any) -> Any:
    """``getExperimentFlags`` (``system.unstable_getExperimentFlags()``): the flags on."""
    with conn.emu._lock:
        return sorted(conn.emu._experiment_flags)


async def notify(conn: Peer, parameter: Any) -> Any:
    """``notify`` (``client.system.notify()``): LM Studio shows it; void (it is recorded)."""
    return None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
    (b"%PDF-", "application/pdf"),
)


_PLAIN = frozenset({".txt", ".md", ".markdown"})
_WORD = frozenset({".doc", ".docx"})
_OTHER_TEXT = frozenset(
    {".csv", ".tsv", ".json", ".jsonl", ".html", ".htm", ".xml", ".yaml", ".yml", ".log", ".rst"}
    | {".py", ".js", ".ts", ".c", ".h", ".cpp", ".java", ".go", ".rs", ".sh", ".toml", ".ini"}
)


def sniff_file_type(data: bytes, name: str = "") -> str:
    """Return the ``fileType`` LM Studio would report for an upload.

    Images and PDFs by their content; other files by the extension of their name
    (``.txt``/``.md`` are ``text/plain``, ``.doc``/``.docx`` ``application/word``, source
    and data files ``text/other`` when they decode as UTF-8); anything else ``unknown``.
    Inferred from the SDKs' ``FileType`` values and their tests, not from LM Studio's code.
    """
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    suffix = os.path.splitext(name)[1].lower()
    if suffix == ".pdf":
        return "application/pdf"
    if suffix in _WORD:
        return "application/word"
    if suffix in _PLAIN or suffix in _OTHER_TEXT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "unknown"
        return "text/plain" if suffix in _PLAIN else "text/other"
    return "unknown"


async def upload_file_base64(conn: Peer, parameter: Any) -> Any:
    """``uploadFileBase64``: store the file for this client and return its handle."""
    try:
        data = base64.b64decode(str(parameter.get("contentBase64", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise server_error(f"Invalid base64 file content: {exc}") from exc
    upload = Upload(
        identifier=f"{uuid.uuid4().hex}.{len(conn.emu._recorder.uploads) + 1}",
        name=str(parameter.get("name", "")),
        data=data,
        file_type=sniff_file_type(data, str(parameter.get("name", ""))),
        client_id=conn.client_id,
    )
    with conn.emu._recorder.lock:
        conn.emu._recorder.uploads.append(upload)
    with conn.emu._lock:
        conn.emu._files[upload.identifier] = upload
    return {"identifier": upload.identifier, "fileType": upload.file_type, "sizeBytes": len(data)}


async def get_local_file_absolute_path(conn: Peer, parameter: Any) -> Any:
    """``getLocalFileAbsolutePath`` (``FileHandle.getFilePath()``): the upload's path on disk.

    The file must be one a connected client uploaded, as for a prediction that uses it. LM
    Studio's answer for another name is not verified (inferred: an error naming the file).
    """
    upload = held_upload(conn, str(parameter.get("fileName", "")))
    return {"path": await asyncio.to_thread(conn.emu._file_path, upload)}


RPC_HANDLERS: dict[tuple[str, str], RpcHandler] = {
    ("system", "listDownloadedModels"): list_downloaded_models,
    ("system", "listDownloadedModelVariants"): list_downloaded_model_variants,
    ("system", "version"): version,
    ("system", "info"): system_info,
    ("system", "notify"): notify,
    ("system", "setExperimentFlag"): set_experiment_flag,
    ("system", "getExperimentFlags"): get_experiment_flags,
    ("files", "uploadFileBase64"): upload_file_base64,
    ("files", "getLocalFileAbsolutePath"): get_local_file_absolute_path,
    ("embedding", "embedString"): embed_string,
    ("llm", "applyPromptTemplate"): apply_prompt_template,
    ("llm", "getBasePredictionConfig"): get_base_prediction_config,
    ("llm", "preloadDraftModel"): preload_draft_model,
}
for _ns in ("llm", "embedding"):
    RPC_HANDLERS[(_ns, "listLoaded")] = list_loaded
    RPC_HANDLERS[(_ns, "getModelInfo")] = get_model_info
    RPC_HANDLERS[(_ns, "getLoadConfig")] = get_load_config
    RPC_HANDLERS[(_ns, "getInstanceProcessingState")] = get_instance_processing_state
    RPC_HANDLERS[(_ns, "tokenize")] = tokenize
    RPC_HANDLERS[(_ns, "countTokens")] = count_tokens_rpc
    RPC_HANDLERS[(_ns, "unloadModel")] = unload_model


# -- model loading channels -----------------------------------------------------------


def _load_fields(parameter: dict[str, Any]) -> list[dict[str, Any]]:
    stack = parameter.get("loadConfigStack") or {}
    fields: dict[str, Any] = {}
    for layer in stack.get("layers", []):
        for item in (layer.get("config") or {}).get("fields", []):
            fields[item["key"]] = item.get("value")
    return [{"key": k, "value": v} for k, v in fields.items()]


def _check_context(model: EmulatedModel, context: int | None) -> None:
    """Refuse to load a GGUF model at a context length that cannot fit in memory.

    A context above the model's maximum is loaded (LM Studio's ``contextLength`` has no
    upper bound, and llama.cpp only warns), on both engines; on the llama.cpp engine one
    too large for the machine fails the load, before llama.cpp tries to allocate it.
    """
    if model.gguf is None:
        return
    from outlines_lmstudio.testing._llama import context_memory_error, memory_bytes, read_facts

    length = context or model.load_context_length
    error = context_memory_error(model, length, read_facts(model.gguf), memory_bytes())
    if error is not None:
        raise error


def _context_length(namespace: str, fields: list[dict[str, Any]]) -> int | None:
    for item in fields:
        if item["key"] == f"{namespace}.load.contextLength":
            return wire_int(item["value"])
    return None


def _ttl_ms(value: Any) -> int | None:
    """Return the time-to-live of a load request (``ttlMs`` / ``loadTtlMs``), or None."""
    ttl = wire_int(value)
    return ttl if ttl is not None and ttl > 0 else None


async def _load_progress(conn: Peer, channel: Channel, packet: str) -> None:
    """Report load progress; raise if the client cancelled the load meanwhile.

    The TypeScript SDK cancels a load whose ``signal`` is aborted (``{"type": "cancel"}``)
    and stops waiting; LM Studio then stops loading, so the model does not end up loaded.
    """
    for progress in (0.25, 0.5, 0.75):
        await asyncio.sleep(conn.emu.load_latency / 3)
        if channel.cancelled:
            break
        await conn.channel_send(channel, {"type": packet, "progress": progress})
    if channel.cancelled:
        raise server_error("Model loading was cancelled.")


_DOMAIN = {"llm": "an LLM", "embedding": "an embedding model"}


def _domain_mismatch(conn: Peer, name: str, actual: str) -> RequestError:
    return RequestError(
        {
            "title": "Model has wrong domain.",
            "cause": f"Expecting {name} to be {_DOMAIN[conn.namespace]}, "
            f"but it is actually {_DOMAIN.get(actual, actual)}.",
            "displayData": {
                "code": "generic.domainMismatch",
                "path": name,
                "actualDomain": actual,
                "expectedDomain": conn.namespace,
            },
        }
    )


async def get_or_load(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``getOrLoad``: an already-loaded instance, or load a downloaded model."""
    name = str(parameter.get("identifier", ""))
    emu = conn.emu
    fields = _load_fields(parameter)
    with emu._lock:
        epoch = emu._epoch  # with the lookup: a reset after it is this load's too
        instance = emu._catalogue.resolve_loaded(name)
        if instance is not None and instance.model.type == conn.namespace:
            info = instance.info()
            model = None
        else:
            model = emu._catalogue.find_model(name)
            if model is None:
                raise path_not_found(conn.emu, name)
            if model.type != conn.namespace:
                raise _domain_mismatch(conn, name, model.type)
    if model is None:
        await conn.channel_send(channel, {"type": "alreadyLoaded", "info": info})
        return
    _check_context(model, _context_length(conn.namespace, fields))
    # A model loaded on demand is a JIT model: it keeps the client's time-to-live, and
    # (LM Studio's default "only keep the last JIT model") unloads the other JIT models.
    with emu._lock:
        _refuse_if_reset(emu, epoch)  # before it unloads the new test's JIT models
        evicted = _evict_jit(emu)
        ident = emu._catalogue.next_identifier(model.key)
    await _say_evicted(conn, channel, evicted)
    start = {"type": "startLoading", "identifier": ident, "info": model.model_info()}
    await conn.channel_send(channel, start)
    await _load_progress(conn, channel, "loadProgress")
    ttl = parameter.get("loadTtlMs")
    with emu._lock:
        _refuse_if_reset(emu, epoch)
        # Another request may have loaded it meanwhile: LM Studio would then reuse it.
        loaded = emu._catalogue.resolve_loaded(name)
        evicted = []
        if loaded is None:
            # A JIT load that overlapped this one was not loaded when this one started, so
            # it was not evicted then: it is now, and only the last JIT model stays.
            evicted = _evict_jit(emu)
            loaded = emu._catalogue.load(
                model,
                None,
                context_length=_context_length(conn.namespace, fields),
                load_fields=fields,
                ttl_ms=_ttl_ms(ttl),
                jit=True,
            )
        info = loaded.info()
    await _say_evicted(conn, channel, evicted)
    await conn.channel_send(channel, {"type": "loadSuccess", "info": info})


def _refuse_if_reset(emu: EmulatorState, epoch: int) -> None:
    """Fail a load that `EmulatorState.reset` overtook (found by a probe).

    A load still running at a reset belongs to the test before: landing afterwards, it
    put its model in the next test's catalogue (and, loaded just in time, unloaded that
    test's own JIT model). Called with the emulator's lock held; ``epoch`` is the reset
    count when the load began.
    """
    if emu._epoch != epoch:
        raise server_error(
            "Model loading was cancelled: the LM Studio emulator was reset while it loaded."
        )


def _evict_jit(emu: EmulatorState) -> list[Instance]:
    """Unload the JIT instances (LM Studio's "only keep the last JIT model"); return them.

    Called with the emulator's lock held.
    """
    evicted = emu._catalogue.jit_instances() if emu.only_keep_last_jit_model else []
    for other in evicted:
        emu._catalogue.unload(other.identifier)
    return evicted


async def _say_evicted(conn: Peer, channel: Channel, evicted: list[Instance]) -> None:
    """Tell a loading client which JIT models its load unloaded."""
    for other in evicted:
        await conn.channel_send(channel, {"type": "unloadingOtherJITModel", "info": other.info()})


async def load_model(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``loadModel``: load a new instance (an explicit identifier must be new)."""
    key = str(parameter.get("modelKey", ""))
    ident = parameter.get("identifier")
    emu = conn.emu
    fields = _load_fields(parameter)
    with emu._lock:
        model = emu._catalogue.find_model(key)
        if model is None:
            raise path_not_found(conn.emu, key)
        if model.type != conn.namespace:
            raise _domain_mismatch(conn, key, model.type)
        if ident is not None and emu._catalogue.find_instance(str(ident)) is not None:
            raise server_error(f'A model with the identifier "{ident}" already exists.')
        epoch = emu._epoch
    context = _context_length(conn.namespace, fields)
    _check_context(model, context)
    await conn.channel_send(channel, {"type": "resolved", "info": model.model_info()})
    await _load_progress(conn, channel, "progress")
    ttl = parameter.get("ttlMs")
    with emu._lock:
        _refuse_if_reset(emu, epoch)
        try:
            instance = emu._catalogue.load(
                model,
                ident,
                context_length=context,
                load_fields=fields,
                ttl_ms=_ttl_ms(ttl),
            )
        except ValueError as exc:
            raise server_error(str(exc)) from exc
        info = instance.info()
    await conn.channel_send(channel, {"type": "success", "info": info})


async def stream_logs(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``streamLogs`` (``client.diagnostics.unstable_streamLogs()``): log events until ``stop``.

    Every prediction of any client is logged while the channel is open; the client's
    ``{"type": "stop"}`` ends it (with ``channelClose``, as LM Studio's handler returns).
    """
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    conn.emu._log_listeners.add(queue)
    try:
        while (event := await _next_unless_stopped(queue, channel.cancel_event)) is not None:
            await conn.channel_send(channel, {"type": "log", "log": event})
    finally:
        conn.emu._log_listeners.discard(queue)


async def _next_unless_stopped(
    queue: asyncio.Queue[dict[str, Any]], stopped: asyncio.Event
) -> dict[str, Any] | None:
    """Return the next queued event, or None once ``stopped`` is set."""
    if stopped.is_set():
        return None
    get = asyncio.ensure_future(queue.get())
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait((get, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        get.cancel()
    return get.result() if get.done() and not get.cancelled() else None


async def alive(
    conn: Peer, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``alive`` (``client.system.whenDisconnected()``): stays open while the client is.

    The channel never ends on its own; it goes when the socket closes, which is how the
    client learns that it was disconnected.
    """
    await asyncio.Event().wait()  # cancelled when the socket closes


def _channel_handlers() -> dict[tuple[str, str], ChannelHandler]:
    handlers: dict[tuple[str, str], ChannelHandler] = {
        ("llm", "predict"): predict,
        ("llm", "completeRawText"): complete_raw_text,
        ("system", "alive"): alive,
        ("diagnostics", "streamLogs"): stream_logs,
    }
    for ns in ("llm", "embedding"):
        handlers[(ns, "getOrLoad")] = get_or_load
        handlers[(ns, "loadModel")] = load_model
    return handlers


CHANNEL_HANDLERS = _channel_handlers()
