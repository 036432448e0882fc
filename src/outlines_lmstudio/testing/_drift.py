"""Drift guard: check wire messages against the SDK's own msgspec structs.

``lmstudio._sdk_models`` describes every endpoint as a ``Pseudo<Namespace>``
struct whose fields are ``rpc<Endpoint>`` (``parameter`` / ``returns``) and
``channel<Endpoint>`` (``creationParameter`` / ``toClientPacket`` /
``toServerPacket``). The guard looks the endpoint up there and converts the
payload with `msgspec.convert`, so a new SDK that changes the protocol makes
the emulator's test suite fail instead of drifting silently.
"""

from __future__ import annotations

import functools
from typing import Any

from outlines_lmstudio.testing._surface import CHANNELS, RPCS

__all__ = [
    "FROM_CLIENT",
    "check_incoming",
    "check_outgoing",
    "check_request_ids",
    "refused_by_lm_studio",
]

FROM_CLIENT = "(the client's request)"
"""Marks a problem `check_incoming` found: a value the client sent, not the emulator."""

_SAME_PACKETS = {"completeRawText": "predict"}
"""Endpoints the Python SDK lacks whose packets are those of one it has (lmstudio-js)."""

_NAMESPACES = {
    "llm": "PseudoLlm",
    "embedding": "PseudoEmbedding",
    "system": "PseudoSystem",
    "files": "PseudoFiles",
    "repository": "PseudoRepository",
}

_ENVELOPES: dict[str, tuple[dict[str, type | tuple[type, ...]], frozenset[str]]] = {
    # type -> (required keys and their types, optional keys)
    "rpcResult": ({"callId": int}, frozenset({"result"})),
    "rpcError": ({"callId": int, "error": dict}, frozenset()),
    "channelSend": ({"channelId": int, "message": dict}, frozenset({"ackId"})),
    "channelClose": ({"channelId": int}, frozenset()),
    "channelError": ({"channelId": int, "error": dict}, frozenset()),
    "communicationWarning": ({"warning": str}, frozenset()),
}


@functools.cache
def _endpoint_types(namespace: str, kind: str, endpoint: str) -> dict[str, Any] | None:
    """Map the SDK's field names to types for one endpoint (None if unknown)."""
    import msgspec
    from lmstudio import _sdk_models

    struct_name = _NAMESPACES.get(namespace)
    if struct_name is None:
        return None
    prefix = "rpc" if kind == "rpc" else "channel"
    wanted = prefix + endpoint[:1].upper() + endpoint[1:]
    for ns_field in msgspec.structs.fields(getattr(_sdk_models, struct_name)):
        if ns_field.encode_name == wanted:
            if not (isinstance(ns_field.type, type) and issubclass(ns_field.type, msgspec.Struct)):
                return {}  # an endpoint without typed payloads (the ``alive`` channel)
            return {f.encode_name: f.type for f in msgspec.structs.fields(ns_field.type)}
    return None


def _convert(data: Any, type_: Any, what: str) -> list[str]:
    import msgspec

    try:
        msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        return [f"{what}: {exc}"]
    return []


def _check_error(error: Any, what: str) -> list[str]:
    from lmstudio import _sdk_models

    problems = _convert(error, _sdk_models.SerializedLMSExtendedError, what)
    if not isinstance(error, dict):
        return problems
    if not isinstance(error.get("title"), str):
        problems.append(f"{what}: the error has no string 'title'")
    display = error.get("displayData")
    if isinstance(display, dict) and display.get("code") in _known_codes():
        problems += _convert(display, _sdk_models.ErrorDisplayData, f"{what}.displayData")
    return problems


@functools.cache
def _known_codes() -> frozenset[str]:
    import typing

    from lmstudio import _sdk_models

    return frozenset(
        member.__struct_config__.tag for member in typing.get_args(_sdk_models.ErrorDisplayData)
    )


def _check_envelope(message: Any) -> list[str]:
    if not isinstance(message, dict):
        return [f"a frame must be a JSON object, not {type(message).__name__}"]
    kind = message.get("type")
    spec = _ENVELOPES.get(kind) if isinstance(kind, str) else None
    if spec is None:
        return [f"unknown envelope type {kind!r} (the SDK's receive loop would die)"]
    required, optional = spec
    problems = []
    for key, type_ in required.items():
        value = message.get(key)
        if not isinstance(value, type_) or isinstance(value, bool):
            problems.append(f"{kind}: {key!r} must be {type_}, got {value!r}")
    extra = set(message) - set(required) - optional - {"type"}
    if extra:
        problems.append(f"{kind}: unexpected keys {sorted(extra)}")
    return problems


def check_outgoing(namespace: str, endpoint: str | None, kind: str, message: Any) -> list[str]:
    """Check one server-to-client frame; return the problems found.

    Parameters
    ----------
    namespace
        The socket's namespace.
    endpoint
        The endpoint the frame answers (None for ``communicationWarning``).
    kind
        ``"rpc"`` or ``"channel"``: what kind of request the frame answers.
    message
        The frame, as a JSON-compatible object.
    """
    problems = _check_envelope(message)
    if problems or endpoint is None:
        return problems
    where = f"{namespace}/{endpoint} {message['type']}"
    if message["type"] in ("rpcError", "channelError"):
        return _check_error(message["error"], where)
    types = _endpoint_types(namespace, kind, _SAME_PACKETS.get(endpoint, endpoint))
    if types is None:
        if endpoint in (RPCS if kind == "rpc" else CHANNELS).get(namespace, ()):
            return []  # newer than the Python SDK's schemas: the TypeScript suite checks it
        return [f"{where}: the SDK defines no {kind} endpoint {endpoint!r} on {namespace!r}"]
    if message["type"] == "rpcResult":
        if "returns" not in types:  # a void endpoint: the SDK expects no result
            if "result" in message:
                return [f"{where}: a void endpoint must leave 'result' out"]
            return []
        returns = types["returns"]
        if "result" not in message:
            if returns is Any or _allows_none(returns):
                return []
            return [f"{where}: 'result' is missing"]
        return _convert(message["result"], returns, where)
    if message["type"] == "channelSend":
        if "toClientPacket" not in types:
            return [f"{where}: the SDK defines no packets from the server on this channel"]
        return _convert(message["message"], types["toClientPacket"], where)
    return []


def _allows_none(type_: Any) -> bool:
    import typing

    return type(None) in typing.get_args(type_)


def check_incoming(namespace: str, message: dict[str, Any]) -> list[str]:
    """Check a client-to-server request against the SDK's schemas (SDK drift)."""
    kind = message.get("type")
    endpoint = message.get("endpoint")
    if kind not in ("rpcCall", "channelCreate") or not isinstance(endpoint, str):
        return []
    short = "rpc" if kind == "rpcCall" else "channel"
    where = f"{namespace}/{endpoint} {kind} {FROM_CLIENT}"
    key = "parameter" if kind == "rpcCall" else "creationParameter"
    types = _endpoint_types(namespace, short, endpoint)
    if types is None and (namespace, endpoint) in _OBJECT_PARAMETERS:
        types = {key: dict[str, Any]}  # at least an object, as its TypeScript schema says
    if types is None:
        return []  # unknown endpoints are answered (and reported) by the emulator
    if key not in types:
        return []
    if key not in message:
        # LM Studio's schema reads an absent parameter as undefined, which fails a
        # required one as ``{}`` fails its fields (found by a probe: it was served).
        if _convert(None, types[key], where):
            return [f"{where}: the required {key!r} is missing"]
        return []
    return _convert(message[key], types[key], where)


_OBJECT_PARAMETERS = frozenset(
    {
        # Endpoints the emulator serves that the Python SDK's schemas lack (lmstudio-js
        # has them), whose parameter is an object there: a list or number was served and
        # failed inside the emulator ("'list' object has no attribute 'get'").
        ("system", "listDownloadedModelVariants"),
        ("llm", "getBasePredictionConfig"),
        ("llm", "getInstanceProcessingState"),
        ("embedding", "getInstanceProcessingState"),
        ("llm", "completeRawText"),
    }
)

_REQUEST_IDS: dict[str, tuple[str, ...]] = {
    # The envelope keys LM Studio's packet schema types (the SDK's `_ws_impl` sends them).
    "rpcCall": ("endpoint", "callId"),
    "channelCreate": ("endpoint", "channelId"),
    "channelSend": ("channelId",),
}


def check_request_ids(message: dict[str, Any]) -> list[str]:
    """Check the envelope of a client's request: a string endpoint and integer ids.

    LM Studio refuses a packet whose ``callId`` or ``channelId`` is not a number, as its
    packet schema says, before looking at the endpoint. A JSON number that is an integer
    (``3.0`` too, as JavaScript reads it) passes.
    """
    kind = message.get("type")
    problems = []
    for key in _REQUEST_IDS.get(kind, ()) if isinstance(kind, str) else ():
        value = message.get(key)
        if key == "endpoint":
            good = isinstance(value, str)
        else:
            good = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, float) and value.is_integer()
            )
        if not good:
            wanted = "a string" if key == "endpoint" else "an integer"
            problems.append(f"{kind} {FROM_CLIENT}: {key!r} must be {wanted}, got {value!r:.60}")
    return problems


def refused_by_lm_studio(namespace: str, message: dict[str, Any], problems: list[str]) -> list[str]:
    """Return why LM Studio's own check refuses a request that `check_incoming` faults.

    LM Studio reads JSON with JavaScript, where ``1500.0`` is the integer ``1500`` (the
    Python SDK sends ``ttl=1.5`` so); the SDK's structs want a Python ``int``. Only what
    still fails with such numbers read as integers is refused (``[]``: served).
    """
    return check_incoming(namespace, _javascript_numbers(message)) if problems else []


def _javascript_numbers(value: Any) -> Any:
    """Return JSON data with each integral float as an int, as JavaScript holds it."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        return {key: _javascript_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_javascript_numbers(item) for item in value]
    return value
