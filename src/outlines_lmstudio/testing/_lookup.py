"""Model lookup: model specifiers, the names a request refers to, and the engine serving a model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from outlines_lmstudio.testing._state import Peer
from outlines_lmstudio.testing._synthetic import SyntheticEngine
from outlines_lmstudio.testing._wire import RequestError

if TYPE_CHECKING:
    from outlines_lmstudio.testing._catalogue import Instance
    from outlines_lmstudio.testing._engine import Engine
    from outlines_lmstudio.testing._state import EmulatorState

__all__ = [
    "engine_for",
    "not_found",
    "path_not_found",
    "query_of",
    "request_names",
    "resolve",
    "specifier_name",
]


def query_of(specifier: Any) -> dict[str, Any]:
    """Return the query of a model specifier (``instanceReference`` as a query key)."""
    if isinstance(specifier, dict):
        if specifier.get("type") == "query" and isinstance(specifier.get("query"), dict):
            return dict(specifier["query"])
        if specifier.get("type") == "instanceReference":
            return {"instanceReference": specifier.get("instanceReference")}
    return {}


def specifier_name(emu: EmulatorState, namespace: str, specifier: Any) -> str:
    """Return the identifier a model specifier names, or that of the instance it selects.

    An ``instanceReference`` (the TypeScript SDK's handles) or an empty query
    (``llm.model()``) names no model itself: the loaded instance it selects gives the
    name ("" if none does).
    """
    query = query_of(specifier)
    if query.get("identifier"):
        return str(query["identifier"])
    if not _is_specifier(specifier):
        return ""
    with emu._lock:
        instance = _find_loaded(emu, namespace, query)
    return "" if instance is None else instance.identifier


def _is_specifier(specifier: Any) -> bool:
    """Whether ``specifier`` is a model specifier (a query or an instance reference)."""
    return isinstance(specifier, dict) and specifier.get("type") in ("query", "instanceReference")


def not_found(emu: EmulatorState, namespace: str, query: dict[str, Any]) -> RequestError:
    """Build the ``noModelMatchingQuery`` error (``LMStudioModelNotFoundError`` in the SDK).

    A handle's ``instanceReference`` names one loaded instance, not a query: once that
    instance is unloaded the error is ``specificModelUnloaded`` (the TypeScript SDK's
    handles use references; its message is "This model has already been unloaded.").
    """
    if set(query) == {"instanceReference"}:
        return RequestError(
            {
                "title": "This model has already been unloaded.",
                "cause": f"No loaded instance has the reference {query['instanceReference']!r}.",
                "suggestion": "Get a new handle to the model (load it again if needed).",
                "displayData": {"code": "generic.specificModelUnloaded"},
            }
        )
    with emu._lock:
        loaded = [i.identifier for i in emu._catalogue.loaded_of_type(namespace)]
    wire_query = {k: v for k, v in query.items() if k in ("domain", "identifier", "path", "vision")}
    wanted = query.get("identifier") or query.get("instanceReference") or query.get("path")
    return RequestError(
        {
            "title": "No loaded model satisfies all requirements specified in the query.",
            "cause": f"Query {wanted!r}; loaded {namespace} models: {', '.join(loaded) or 'none'}",
            "suggestion": "Load the model first (e.g. client.llm.model(key)), or check the name.",
            "displayData": {
                "code": "generic.noModelMatchingQuery",
                "query": wire_query,
                "loadedModelsSample": loaded[:10],
                "totalLoadedModels": len(loaded),
            },
        }
    )


def path_not_found(emu: EmulatorState, name: str) -> RequestError:
    """Build the ``pathNotFound`` error: no downloaded model has that key, path or alias."""
    with emu._lock:
        paths = [m.path for m in emu._catalogue.models.values()]
    return RequestError(
        {
            "title": f'Cannot find a model with path "{name}"',
            "suggestion": "Check the model key against the downloaded models (lms ls).",
            "displayData": {
                "code": "generic.pathNotFound",
                "path": name,
                "availablePathsSample": paths[:10],
                "totalModels": len(paths),
            },
        }
    )


def resolve(conn: Peer, specifier: Any) -> Instance:
    """Resolve a model specifier to a loaded instance of the connection's domain."""
    query = query_of(specifier)
    emu = conn.emu
    with emu._lock:
        found = _find_loaded(emu, conn.namespace, query)
        if found is not None:
            found.last_used = time.time()  # the time-to-live counts from here
            return found
    raise not_found(emu, conn.namespace, query)


def _find_loaded(emu: EmulatorState, namespace: str, query: dict[str, Any]) -> Instance | None:
    """Return the loaded instance a model query selects (the caller holds the lock)."""
    loaded = emu._catalogue.loaded_of_type(namespace)
    found = next((i for i in loaded if _matches(i, query)), None)
    if found is None and "identifier" in query:
        # No instance has that identifier: LM Studio then takes it as a model
        # key, path or alternative name ("hugging-quants/llama-3.2-1b-instruct").
        by_model = {**query, "path": query["identifier"]}
        del by_model["identifier"]
        found = next((i for i in loaded if _matches(i, by_model)), None)
    return found


def _matches(instance: Instance, query: dict[str, Any]) -> bool:
    """Whether a loaded instance satisfies every requirement of a model query."""
    if "instanceReference" in query:
        return bool(instance.reference == query["instanceReference"])
    if "identifier" in query and instance.identifier != query["identifier"]:
        return False
    if "path" in query:
        wanted = str(query["path"]).casefold()
        if wanted not in (n.casefold() for n in instance.model.names()):
            return False
    if "vision" in query and instance.model.vision != query["vision"]:
        return False
    return bool(query.get("domain", instance.model.type) == instance.model.type)


def request_names(emu: EmulatorState, namespace: str, parameter: Any) -> tuple[str, ...]:
    """Return the model names a request refers to (identifier and model key), for faults."""
    if not isinstance(parameter, dict):
        return ()
    names: list[str] = []
    specifiers = [parameter[k] for k in ("specifier", "modelSpecifier") if k in parameter]
    for key in ("identifier", "modelKey"):
        if isinstance(parameter.get(key), str):
            names.append(parameter[key])
    with emu._lock:
        for specifier in specifiers:
            query = query_of(specifier)
            if query.get("identifier"):
                names.append(str(query["identifier"]))
            # The instance it selects: an ``instanceReference`` (the TypeScript SDK's
            # handles) or an empty query (``llm.model()``) names no model itself.
            instance = _find_loaded(emu, namespace, query) if _is_specifier(specifier) else None
            if instance is not None:
                names.append(instance.identifier)
        for name in list(names):
            instance = emu._catalogue.resolve_loaded(name)
            model = instance.model if instance else emu._catalogue.find_model(name)
            if model is not None:
                names.append(model.key)
    return tuple(names)


def engine_for(emu: EmulatorState, instance: Instance) -> Engine:
    """Return the engine serving ``instance``.

    A model without a GGUF file gets the synthetic engine; a model with one
    gets a llama.cpp engine, one per loaded instance. An instance loaded again
    the same way (same identifier, file and load config, e.g. after
    `LMStudioEmulator.reset`) gets the same engine back, so the model is not
    read again; an engine is dropped once nothing loaded matches it (when an instance
    is unloaded: `EmulatorState._drop_idle_engines`).
    """
    if instance.model.gguf is None:
        return SyntheticEngine(emu, instance)
    from outlines_lmstudio.testing._llama import LlamaEngine

    with emu._lock:
        emu._drop_idle_engines()
        key = instance.engine_key
        engine = emu._engines.get(key)
        if engine is None:
            engine = emu._engines[key] = LlamaEngine(instance)
        return engine
