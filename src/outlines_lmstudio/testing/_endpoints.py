"""Endpoint handlers: model bookkeeping RPCs, uploads, embeddings and model loading."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._engine import engine_for
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._protocol import Channel, Connection, RequestError, server_error
from outlines_lmstudio.testing._records import Upload, message_text

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance
    from outlines_lmstudio.testing._server import LMStudioEmulator

__all__ = ["CHANNEL_HANDLERS", "RPC_HANDLERS", "request_names", "resolve", "sniff_file_type"]

RpcHandler = Callable[[Connection, Any], Awaitable[Any]]
ChannelHandler = Callable[[Connection, Channel, dict[str, Any], Fault | None], Awaitable[None]]


def _query_of(specifier: Any) -> dict[str, Any]:
    if isinstance(specifier, dict):
        if specifier.get("type") == "query" and isinstance(specifier.get("query"), dict):
            return dict(specifier["query"])
        if specifier.get("type") == "instanceReference":
            return {"instanceReference": specifier.get("instanceReference")}
    return {}


def not_found(emu: LMStudioEmulator, namespace: str, query: dict[str, Any]) -> RequestError:
    """Build the ``noModelMatchingQuery`` error (``LMStudioModelNotFoundError`` in the SDK)."""
    with emu._lock:
        loaded = [i.identifier for i in emu._catalogue.loaded_of_type(namespace)]
    wire_query = {k: v for k, v in query.items() if k in ("domain", "identifier", "path", "vision")}
    wanted = query.get("identifier") or query.get("instanceReference") or query.get("path")
    return RequestError(
        {
            "title": f"No loaded model matches the query {wanted!r}",
            "cause": f"Loaded {namespace} models: {', '.join(loaded) or 'none'}",
            "suggestion": "Load the model first (e.g. client.llm.model(key)), or check the name.",
            "displayData": {
                "code": "generic.noModelMatchingQuery",
                "query": wire_query,
                "loadedModelsSample": loaded[:10],
                "totalLoadedModels": len(loaded),
            },
        }
    )


def resolve(conn: Connection, specifier: Any) -> Instance:
    """Resolve a model specifier to a loaded instance of the connection's domain."""
    query = _query_of(specifier)
    emu = conn.emu
    with emu._lock:
        for instance in emu._catalogue.loaded_of_type(conn.namespace):
            if "instanceReference" in query:
                if instance.reference == query["instanceReference"]:
                    return instance
                continue
            if "identifier" in query and instance.identifier != query["identifier"]:
                continue
            if "path" in query and instance.model.path != query["path"]:
                continue
            if "vision" in query and instance.model.vision != query["vision"]:
                continue
            if query.get("domain", instance.model.type) != instance.model.type:
                continue
            return instance
    raise not_found(emu, conn.namespace, query)


def request_names(emu: LMStudioEmulator, namespace: str, parameter: Any) -> tuple[str, ...]:
    """Return the model names a request refers to (identifier and model key), for faults."""
    if not isinstance(parameter, dict):
        return ()
    names: list[str] = []
    for key in ("specifier", "modelSpecifier"):
        query = _query_of(parameter.get(key))
        if query.get("identifier"):
            names.append(str(query["identifier"]))
    for key in ("identifier", "modelKey"):
        if isinstance(parameter.get(key), str):
            names.append(parameter[key])
    with emu._lock:
        for name in list(names):
            instance = emu._catalogue.resolve_loaded(name)
            model = instance.model if instance else emu._catalogue.find_model(name)
            if model is not None:
                names.append(model.key)
    return tuple(names)


# -- RPCs ---------------------------------------------------------------------------


async def list_loaded(conn: Connection, parameter: Any) -> Any:
    """``listLoaded``: the loaded instances of the namespace's domain."""
    with conn.emu._lock:
        return [i.info() for i in conn.emu._catalogue.loaded_of_type(conn.namespace)]


async def get_model_info(conn: Connection, parameter: Any) -> Any:
    """``getModelInfo``: the instance info (void when missing and not required)."""
    try:
        return resolve(conn, parameter.get("specifier")).info()
    except RequestError:
        if parameter.get("throwIfNotFound", True):
            raise
        return None


async def get_load_config(conn: Connection, parameter: Any) -> Any:
    """``getLoadConfig``: the KV config the instance was loaded with."""
    return resolve(conn, parameter.get("specifier")).load_config()


async def tokenize(conn: Connection, parameter: Any) -> Any:
    """``tokenize``: the token ids of the model's engine."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    return {"tokens": await engine.tokenize(str(parameter.get("inputString", "")))}


async def count_tokens_rpc(conn: Connection, parameter: Any) -> Any:
    """``countTokens``: the number of tokens by the model's engine."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    return {"tokenCount": await engine.count_tokens(str(parameter.get("inputString", "")))}


async def unload_model(conn: Connection, parameter: Any) -> Any:
    """``unloadModel``: void, or noModelMatchingQuery for an unknown identifier."""
    identifier = parameter.get("identifier")
    with conn.emu._lock:
        instance = conn.emu._catalogue.find_instance(str(identifier))
        if instance is not None and instance.model.type == conn.namespace:
            conn.emu._catalogue.unload(instance.identifier)
            return None
    raise not_found(conn.emu, conn.namespace, {"identifier": identifier})


def format_prompt(messages: list[dict[str, Any]]) -> str:
    """Render a wire history with a ChatML-style template."""
    parts = [f"<|im_start|>{m.get('role')}\n{message_text(m)}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n"


async def apply_prompt_template(conn: Connection, parameter: Any) -> Any:
    """``applyPromptTemplate``: the history rendered with the model's prompt template."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("specifier")))
    history = parameter.get("history") or {}
    return {"formatted": await engine.apply_prompt_template(list(history.get("messages", [])))}


async def embed_string(conn: Connection, parameter: Any) -> Any:
    """``embedString``: the embedding vector of the model's engine."""
    engine = engine_for(conn.emu, resolve(conn, parameter.get("modelSpecifier")))
    return {"embedding": await engine.embed(str(parameter.get("inputString", "")))}


async def list_downloaded_models(conn: Connection, parameter: Any) -> Any:
    """``listDownloadedModels``: every model in the catalogue."""
    with conn.emu._lock:
        return [m.model_info() for m in conn.emu._catalogue.models.values()]


async def version(conn: Connection, parameter: Any) -> Any:
    """``version``: a plausible LM Studio version."""
    return {"version": "0.3.31", "build": 1}


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"GIF87a", "image"),
    (b"GIF89a", "image"),
    (b"%PDF-", "application/pdf"),
)


def sniff_file_type(data: bytes) -> str:
    """Return the ``fileType`` LM Studio would report for these bytes."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image"
    return "unknown"


async def upload_file_base64(conn: Connection, parameter: Any) -> Any:
    """``uploadFileBase64``: store the file for this client and return its handle."""
    try:
        data = base64.b64decode(str(parameter.get("contentBase64", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise server_error(f"Invalid base64 file content: {exc}") from exc
    upload = Upload(
        identifier=f"{uuid.uuid4().hex}.{len(conn.emu._recorder.uploads) + 1}",
        name=str(parameter.get("name", "")),
        data=data,
        file_type=sniff_file_type(data),
        client_id=conn.client_id,
    )
    with conn.emu._recorder.lock:
        conn.emu._recorder.uploads.append(upload)
    with conn.emu._lock:
        conn.emu._files[upload.identifier] = upload
    return {"identifier": upload.identifier, "fileType": upload.file_type, "sizeBytes": len(data)}


RPC_HANDLERS: dict[tuple[str, str], RpcHandler] = {
    ("system", "listDownloadedModels"): list_downloaded_models,
    ("system", "version"): version,
    ("files", "uploadFileBase64"): upload_file_base64,
    ("embedding", "embedString"): embed_string,
    ("llm", "applyPromptTemplate"): apply_prompt_template,
}
for _ns in ("llm", "embedding"):
    RPC_HANDLERS[(_ns, "listLoaded")] = list_loaded
    RPC_HANDLERS[(_ns, "getModelInfo")] = get_model_info
    RPC_HANDLERS[(_ns, "getLoadConfig")] = get_load_config
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


def _context_length(namespace: str, fields: list[dict[str, Any]]) -> int | None:
    for item in fields:
        if item["key"] == f"{namespace}.load.contextLength" and isinstance(item["value"], int):
            return int(item["value"])
    return None


async def _load_progress(conn: Connection, channel: Channel, packet: str) -> None:
    for progress in (0.25, 0.5, 0.75):
        await asyncio.sleep(conn.emu.load_latency / 3)
        await conn.channel_send(channel, {"type": packet, "progress": progress})


def _path_not_found(conn: Connection, name: str) -> RequestError:
    with conn.emu._lock:
        paths = [m.path for m in conn.emu._catalogue.models.values()]
    return RequestError(
        {
            "title": f"Cannot find a model with path or key {name!r}",
            "suggestion": "Check the key with client.list_downloaded_models().",
            "displayData": {
                "code": "generic.pathNotFound",
                "path": name,
                "availablePathsSample": paths[:10],
                "totalModels": len(paths),
            },
        }
    )


def _domain_mismatch(conn: Connection, name: str, actual: str) -> RequestError:
    return RequestError(
        {
            "title": f"Model {name!r} is an {actual} model, not an {conn.namespace} model",
            "displayData": {
                "code": "generic.domainMismatch",
                "path": name,
                "actualDomain": actual,
                "expectedDomain": conn.namespace,
            },
        }
    )


async def get_or_load(
    conn: Connection, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``getOrLoad``: an already-loaded instance, or load a downloaded model."""
    name = str(parameter.get("identifier", ""))
    emu = conn.emu
    fields = _load_fields(parameter)
    with emu._lock:
        instance = emu._catalogue.resolve_loaded(name)
        if instance is not None and instance.model.type == conn.namespace:
            info = instance.info()
            model = None
        else:
            model = emu._catalogue.find_model(name)
            if model is None:
                raise _path_not_found(conn, name)
            if model.type != conn.namespace:
                raise _domain_mismatch(conn, name, model.type)
    if model is None:
        await conn.channel_send(channel, {"type": "alreadyLoaded", "info": info})
        return
    with emu._lock:
        ident = emu._catalogue.next_identifier(model.key)
    start = {"type": "startLoading", "identifier": ident, "info": model.model_info()}
    await conn.channel_send(channel, start)
    await _load_progress(conn, channel, "loadProgress")
    with emu._lock:
        # Another request may have loaded it meanwhile: LM Studio would then reuse it.
        loaded = emu._catalogue.resolve_loaded(name)
        if loaded is None:
            context = _context_length(conn.namespace, fields)
            loaded = emu._catalogue.load(model, None, context_length=context, load_fields=fields)
        info = loaded.info()
    await conn.channel_send(channel, {"type": "loadSuccess", "info": info})


async def load_model(
    conn: Connection, channel: Channel, parameter: dict[str, Any], fault: Fault | None
) -> None:
    """``loadModel``: load a new instance (an explicit identifier must be new)."""
    key = str(parameter.get("modelKey", ""))
    ident = parameter.get("identifier")
    emu = conn.emu
    fields = _load_fields(parameter)
    with emu._lock:
        model = emu._catalogue.find_model(key)
        if model is None:
            raise _path_not_found(conn, key)
        if model.type != conn.namespace:
            raise _domain_mismatch(conn, key, model.type)
        if ident is not None and emu._catalogue.find_instance(str(ident)) is not None:
            raise server_error(f'A model with the identifier "{ident}" already exists.')
    await conn.channel_send(channel, {"type": "resolved", "info": model.model_info()})
    await _load_progress(conn, channel, "progress")
    context = _context_length(conn.namespace, fields)
    with emu._lock:
        try:
            instance = emu._catalogue.load(model, ident, context_length=context, load_fields=fields)
        except ValueError as exc:
            raise server_error(str(exc)) from exc
        info = instance.info()
    await conn.channel_send(channel, {"type": "success", "info": info})


def _channel_handlers() -> dict[tuple[str, str], ChannelHandler]:
    from outlines_lmstudio.testing._predict import predict

    handlers: dict[tuple[str, str], ChannelHandler] = {("llm", "predict"): predict}
    for ns in ("llm", "embedding"):
        handlers[(ns, "getOrLoad")] = get_or_load
        handlers[(ns, "loadModel")] = load_model
    return handlers


CHANNEL_HANDLERS = _channel_handlers()
