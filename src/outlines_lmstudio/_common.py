"""What the sync and async models share: checked requests, caches, argument checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import httpx
import lmstudio as lms
import msgspec
from lmstudio import FileHandle
from outlines.inputs import Chat

from ._adapter import LMStudioTypeAdapter
from ._cache import AsyncClientCache, SyncClientCache
from ._config import (
    MAX_COUNT,
    PredictionArgs,
    check_flag,
    check_seconds,
    describe,
    is_unknown_name,
    optional_name,
    parse_inference_kwargs,
    real_number,
    unknown_setting,
)
from ._discovery import other_server_error
from ._exhausted import files_hint, out_of_files
from ._hosts import host_problem
from ._inputs import ChatPrompt, follows_a_prompt
from ._output import OutputPlan
from ._reconnect import AsyncReconnects, SyncReconnects
from ._reply import ReplyStats
from ._sdk_errors import (
    SLOW_PROBE,
    Stage,
    client_closed,
    client_host,
    client_in_other_loop,
    closed_client_error,
    other_loop_error,
    release_unsent,
    searched,
    server_hint,
    translate_sdk_error,
)
from .errors import (
    InvalidClientError,
    InvalidInferenceArgumentError,
    InvalidInferenceValueError,
    InvalidSchemaError,
    LMStudioConnectionError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
    UnknownSettingError,
)

__all__ = [
    "in_batch_item",
    "ASYNC_CLIENT_CLOSED",
    "ASYNC_HANDLES",
    "ASYNC_IMAGES",
    "ASYNC_RECONNECTS",
    "ASYNC_DOWNLOADS",
    "ASYNC_TRAITS",
    "AskedDownload",
    "CONFIRM_SECONDS",
    "DEADLINE_PASSED",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_READ_TIMEOUT",
    "DRAIN_SECONDS",
    "NO_ARGS",
    "AskedTraits",
    "download_to_load",
    "BatchLookups",
    "Common",
    "Completion",
    "ModelTraits",
    "Request",
    "SYNC_HANDLES",
    "SYNC_IMAGES",
    "SYNC_RECONNECTS",
    "SYNC_DOWNLOADS",
    "SYNC_TRAITS",
    "SeveralInputs",
    "check_concurrency",
    "check_model_name",
    "check_retries",
    "check_timeout",
    "for_a_stand_in",
    "is_batch",
    "no_backend",
]

ASYNC_CLIENT_CLOSED = "this AsyncClient was closed: make a new one to try again"
"""What an error adds when it closed an ``AsyncClient`` the SDK cannot enter again."""

DRAIN_SECONDS = 5.0
"""How long a cancelled prediction may take to confirm before its reader is dropped."""

CONFIRM_SECONDS = 1.0
"""How long a Ctrl-C waits for LM Studio to confirm the cancel (the process may exit next)."""

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to open a websocket to LM Studio and authenticate (``connect_timeout=``)."""

DEFAULT_READ_TIMEOUT = 60.0
"""Seconds to wait for any message from LM Studio during a call (``read_timeout=``; the same
bound the sync SDK applies to every wait, ``lmstudio.set_sync_api_timeout``)."""

NO_ARGS = PredictionArgs()
"""What a call without inference keyword arguments asks for (frozen, shared)."""

DEFAULT_MAX_CONCURRENCY = 4
"""LM Studio serves 4 predictions at once per llama.cpp model by default."""


class ModelTraits(NamedTuple):
    """What a loaded model can take, as LM Studio reports it (cached per client).

    The model behind an identifier may change (``lms load X --identifier main``), so a
    call is refused only on traits LM Studio gave after the call was made (`AskedTraits`),
    and they are replaced when a reply names another model (`_flow.predict`).

    Attributes
    ----------
    format
        ``"gguf"`` (llama.cpp), ``"safetensors"`` (MLX), ...
    vision
        Whether the model accepts images.
    model_key
        The model they are of (its key, as a reply's model info names it).
    """

    format: str
    vision: bool
    model_key: str = ""

    @classmethod
    def of(cls, info: Any) -> ModelTraits:
        """Read them from the SDK's model info (``handle.get_info()``, a reply's ``model_info``)."""
        return cls(str(info.format), bool(info.vision), str(info.model_key))


class AskedTraits(NamedTuple):
    """A model's traits and when LM Studio was asked for them: a traits cache's entry.

    Attributes
    ----------
    traits
        The traits.
    at
        The ``time.monotonic()`` reading taken before the request that gave them was sent
        (or the prediction whose reply named them was opened): LM Studio's answer is of
        that moment or later.
    """

    traits: ModelTraits
    at: float

    def current(self, since: float | None) -> bool:
        """Tell whether they were asked at or after ``since`` (``None``: any time will do)."""
        return since is None or self.at >= since

    @staticmethod
    def too_old(since: float | None) -> Callable[[AskedTraits], bool] | None:
        """Return the traits cache's ``stale`` test for traits asked before ``since``."""
        return None if since is None else lambda asked: asked.at < since


def download_to_load(key: str, loaded: Iterable[str], downloads: Iterable[Any]) -> Any | None:
    """Return the download LM Studio would load to find the model ``key``, if it would load.

    Parameters
    ----------
    key
        A model key, path or instance identifier, as a call names its model.
    loaded
        The identifiers of the loaded instances: one named ``key`` answers, whatever model
        it is of, and nothing is loaded.
    downloads
        What LM Studio reports of each downloaded LLM (the SDK's infos).

    Returns
    -------
    Any
        The download's info, or ``None`` when nothing would be loaded or none matches.
    """
    if key in loaded:
        return None
    infos = list(downloads)
    # As LM Studio finds a model to load: its key or path, then either ignoring case, then a
    # variant's key without its "@variant" (found by a review: only the exact key was).
    folded = key.casefold()
    matches: list[Callable[[Any], bool]] = [
        lambda info: key in (info.model_key, info.path),
        lambda info: folded in (info.model_key.casefold(), info.path.casefold()),
        lambda info: "@" not in key and info.model_key.partition("@")[0].casefold() == folded,
    ]
    for matching in matches:
        for info in infos:
            if matching(info):
                return info
    return None


SYNC_HANDLES: SyncClientCache[lms.LLM] = SyncClientCache()
SYNC_IMAGES: SyncClientCache[FileHandle] = SyncClientCache()
ASYNC_HANDLES: AsyncClientCache[lms.AsyncLLM] = AsyncClientCache()
ASYNC_IMAGES: AsyncClientCache[FileHandle] = AsyncClientCache()
SYNC_RECONNECTS = SyncReconnects()
SYNC_TRAITS: SyncClientCache[AskedTraits] = SyncClientCache()
ASYNC_TRAITS: AsyncClientCache[AskedTraits] = AsyncClientCache()
AskedDownload: TypeAlias = "tuple[ModelTraits | None, float]"
"""A key's `download_to_load` traits (``None``: nothing to judge) and when they were asked."""
SYNC_DOWNLOADS: SyncClientCache[AskedDownload] = SyncClientCache()
ASYNC_DOWNLOADS: AsyncClientCache[AskedDownload] = AsyncClientCache()
"""Calls made at once (a batch's items) share one ask (found by a review: each item listed)."""
ASYNC_RECONNECTS = AsyncReconnects()


class BatchLookups:
    """The model lookups that failed in one batch: by model key, the SDK's error.

    The batch's other items for that key fail with the same error without asking LM Studio
    again (a model that cannot load was asked to load once per item: found by a probe, 200
    requests for 200 prompts). Kept for that batch only: a later call asks again (memory
    was freed, the model was loaded meanwhile). ``search``: the failed search of LM
    Studio's default ports for a client made without a host, which every later item of the
    batch fails with too (16 items searched in turn, 2 s each: found by a review).
    """

    def __init__(self) -> None:
        self.failed: dict[str | None, lms.LMStudioError] = {}
        self.search: LMStudioConnectionError | None = None


class Request(msgspec.Struct, frozen=True):
    """A checked request: everything known before any I/O happens.

    ``lookups``: what the batch it belongs to shares (`BatchLookups`), if it is a batch item.
    ``made``: when the call was made (``time.monotonic()``; a batch's items share the reading
    taken when ``batch`` was called): it is refused only on traits asked since.
    """

    prompt: ChatPrompt
    plan: OutputPlan
    args: PredictionArgs
    key: str | None
    lookups: BatchLookups | None = None
    made: float = msgspec.field(default_factory=time.monotonic)

    def with_callbacks(self, callbacks: dict[str, Callable[..., Any]]) -> Request:
        """Return this request with ``callbacks`` as its SDK callbacks (by keyword)."""
        args = msgspec.structs.replace(self.args, callbacks=callbacks)
        return msgspec.structs.replace(self, args=args)

    def sdk_kwargs(self) -> dict[str, Any]:
        kwargs = self.args.sdk_kwargs()
        if self.plan.response_format is not None:
            kwargs["response_format"] = self.plan.response_format
        return kwargs


class Completion(msgspec.Struct, frozen=True):
    """A finished reply: its answer text, why the model stopped, its reasoning and stats."""

    text: str
    stop_reason: str | None
    reasoning: str = ""
    measured: ReplyStats | Callable[[], ReplyStats] | None = None
    """The stats, or how to build them when first asked (most calls never ask)."""

    @property
    def stats(self) -> ReplyStats | None:
        """The reply's stats, if known."""
        measured = self.measured
        return measured() if callable(measured) else measured


def _structured_from_config(
    args: PredictionArgs, plan_output: Callable[[object], OutputPlan]
) -> tuple[PredictionArgs, OutputPlan]:
    """Take ``config['structured']`` as the output type it describes, with the same checks.

    A JSON schema given there is planned as if it were the output type (checked, refused
    or normalised for LM Studio's engines before anything is sent); a GBNF grammar becomes
    a grammar plan, so that a model whose engine takes no GBNF is refused first; ``none``
    asks for free text, and stays in the config (nothing else would send it). Any other
    setting then leaves the config: the plan sends it.
    """
    assert args.config is not None
    config = dict(args.config)
    given = config.pop("structured")
    setting = given.to_dict() if hasattr(given, "to_dict") else given
    if setting is None:
        kind, body = "none", None
    else:  # checked by the SDK's own struct in `parse_inference_kwargs`: a known shape
        kind = setting.get("type")
        body = next((setting[k] for k in _STRUCTURED_BODY.get(kind, ()) if k in setting), None)
    if kind == "json" and body is not None:
        if not isinstance(body, Mapping):  # the SDK's struct takes any value there
            raise InvalidSchemaError(
                "config['structured']['jsonSchema'] must be a JSON schema object (a dict), "
                f"got {type(body).__name__} {body!r:.80}. Pass the schema as a dict, or pass "
                "it (a dict, or its JSON text) as the output type instead of in config."
            )
        plan = plan_output(body if isinstance(body, dict) else dict(body))
    elif kind == "gbnf" and body is not None:
        if not isinstance(body, str) or not body.strip():
            raise InvalidInferenceArgumentError(
                "config['structured'] of type 'gbnf' needs a non-empty 'gbnfGrammar' string."
            )
        # Here, not at import: the grammar package loads lark (a rare path).
        from ._grammar._gbnf_syntax import GbnfSyntaxError, check_gbnf_syntax

        try:
            check_gbnf_syntax(body)
        except GbnfSyntaxError as exc:
            raise InvalidInferenceValueError(
                f"config['structured'] holds a GBNF grammar llama.cpp cannot parse: {exc}. "
                "Fix the grammar, or pass an outlines Regex or CFG as the output type with "
                "grammar=True on from_lmstudio to have the GBNF written for you."
            ) from None
        plan = OutputPlan("grammar", {"type": "gbnf", "gbnfGrammar": body})
    elif kind == "none":
        # Sent as given: it overrides a structured setting of a preset or of the model's
        # defaults in LM Studio (found by a probe: it was dropped, so they applied).
        if setting is not None:
            return args, plan_output(None)
        plan = plan_output(None)
    else:
        raise InvalidInferenceArgumentError(
            f"config['structured'] of type {kind!r} needs its "
            f"{'jsonSchema' if kind == 'json' else 'gbnfGrammar'!r}. Better: pass the JSON "
            "schema as the output type, model(prompt, schema), and leave config['structured'] out."
        )
    return msgspec.structs.replace(args, config=config or None), plan


_STRUCTURED_BODY = {"json": ("jsonSchema", "json_schema"), "gbnf": ("gbnfGrammar", "gbnf_grammar")}
"""Where each kind of ``config['structured']`` keeps what it asks for (both spellings)."""


SeveralInputs: TypeAlias = (
    list[str]
    | list[Chat]
    | list[lms.Chat]
    | list[str | Chat | lms.Chat]
    | tuple[str | Chat | lms.Chat, ...]
)
"""Inputs `is_batch` always reads as several (for type checkers: ``parse`` returns a list)."""


def is_batch(model_input: object) -> bool:
    """Tell whether ``parse`` got several inputs rather than one ``[prompt, Image, ...]``.

    A tuple of inputs is a batch too, as `batch` takes it (a tuple is no one input). So is
    a list of several inputs and some other values but no image (``["a", "b", None]``, a
    column with a missing value): one ``[prompt, Image, ...]`` holds one prompt, so the
    odd value is refused as a batch item, as `batch` refuses it, not as what follows a
    prompt.
    """
    if isinstance(model_input, tuple):
        return True
    if not isinstance(model_input, list):
        return False
    inputs = [isinstance(item, str | list | Chat | lms.Chat) for item in model_input]
    if all(inputs):
        return True
    return sum(inputs) > 1 and not any(follows_a_prompt(item) for item in model_input)


def check_concurrency(value: object) -> int:
    number = real_number(value)
    if not isinstance(number, int):
        raise InvalidInferenceArgumentError(
            f"max_concurrency must be an int, got {describe(value)}."
        )
    if number < 1:
        raise InvalidInferenceValueError(
            f"max_concurrency must be at least 1, got {describe(value)}."
        )
    return number


def check_timeout(value: object, name: str = "timeout") -> float | None:
    return check_seconds(name, value)


def check_model_name(value: object) -> str | None:
    return optional_name("model_name", value, "model key", none=" or None")


_SETTINGS: dict[str, Callable[[object], object]] = {
    "model_name": check_model_name,
    "max_concurrency": check_concurrency,
    "timeout": check_timeout,
    "connect_timeout": partial(check_timeout, name="connect_timeout"),
    "read_timeout": partial(check_timeout, name="read_timeout"),
}
"""A model's settings a user may assign, each with the check `from_lmstudio` runs."""


def _check_host(host: str | None) -> None:
    """Refuse a client's host that is not ``HOST:PORT``, before anything is sent.

    The SDK puts ``ws://`` and its own path around the host: ``http://127.0.0.1:1234``
    became ``ws://http://127.0.0.1:1234/llm``, said to be "not reachable ... Is LM Studio
    running?" while it was (found by a probe; the CLI takes those spellings itself). So
    were a host with spaces around it, with no port, and an IPv6 address without brackets;
    on an async client, ``::1:1234`` or ``localhost:abc`` raised httpx's ``InvalidURL``
    (found by a probe).

    Raises
    ------
    InvalidClientError
        Naming the ``HOST:PORT`` to give instead.
    """
    if host is None:
        return
    if "://" in host or "/" in host:
        bare = host.strip().split("://", 1)[-1].split("/", 1)[0]
        raise InvalidClientError(
            f"The client's host {host!r} is not HOST:PORT: the lmstudio SDK adds ws:// and its "
            "own path to it, so a scheme or a path makes a host it cannot reach. "
            + _create_with(bare)
        )
    if not host.strip():
        raise InvalidClientError(f"The client's host {host!r} is blank. " + _create_with(""))
    if host != host.strip():
        raise InvalidClientError(
            f"The client's host {host!r} has spaces or a line end around it, which the SDK "
            "sends as they are. " + _create_with(host.strip())
        )
    problem = host_problem(host, "e.g. lms.Client('localhost:1234') (or lms.AsyncClient)")
    if problem is not None:
        raise InvalidClientError(f"The client's host {host!r}{problem}")


def _create_with(host: str) -> str:
    """Say to create the client with ``host``, if it is a ``HOST:PORT``; else with one.

    A host offered that is no ``HOST:PORT`` either (``http://localhost`` offered
    ``'localhost'``, which has no port) was then refused in turn (found by a review).
    """
    if host and host_problem(host, "") is None:
        return f"Create the client with lms.Client({host!r}) (or lms.AsyncClient)."
    return (
        "Create the client with LM Studio's HOST:PORT, e.g. lms.Client('localhost:1234') (or "
        "lms.AsyncClient)."
    )


_NONE_MEANS = {
    "model_name": "the model LM Studio has loaded",
    "timeout": "no limit on a call",
    "connect_timeout": "no bound on connecting",
    "read_timeout": "no bound on each wait",
}
"""What ``None`` means for the settings that take it (a deletion's message says)."""


def for_a_stand_in(client: object) -> str:
    """Return what a refused client's message adds when it is no SDK client at all.

    A mock cannot stand in for the SDK's client here (Outlines' own tests use one): found by
    a probe running those tests, whose mock was refused with nothing said of the way this
    library offers instead.
    """
    if isinstance(client, lms.Client | lms.AsyncClient):
        return ""
    return (
        " To test without LM Studio, give a real client the emulator's address instead of a "
        "mock: with outlines_lmstudio.testing.LMStudioEmulator() as emu, "
        "lmstudio.Client(emu.api_host) as client: ..."
    )


def _check_client(model: object, client: object) -> None:
    """Refuse a client of the other kind, or no client, assigned to ``model.client``.

    Found by a review: anything was taken, and the next call failed on a bare KeyError or
    TypeError of the SDK's or ours.

    Raises
    ------
    InvalidClientError
        Naming the kind of client the model needs.
    """
    wanted: type[Any] = getattr(type(model), "_client_class", object)
    if not isinstance(client, wanted):
        raise InvalidClientError(
            f"{type(model).__name__}.client must be an lmstudio.{wanted.__name__}, got "
            f"{type(client).__name__}: make another model for another kind of client, "
            "from_lmstudio(client, model_name)." + for_a_stand_in(client)
        )
    _check_host(client_host(client))


def _unknown_setting(model: object, name: str) -> UnknownSettingError:
    """Return the error of an assignment to ``name``, which is none of a model's settings."""
    hint = (
        f" {name} is a setting of the model's type adapter: model.type_adapter.{name} = "
        f"True (or from_lmstudio(client, model_name, {name}=True))."
        if name in ("grammar", "strict_schema")
        else None
    )
    return unknown_setting(
        model,
        name,
        f"{', '.join(_SETTINGS)} (and client, type_adapter)",
        [*_SETTINGS, "client", "type_adapter"],
        hint,
    )


class Common:
    """What the sync and async models share: checking a call before any I/O."""

    if not TYPE_CHECKING:  # type checkers then check assignments against the settings

        def __setattr__(self, name: str, value: object) -> None:
            # The settings are plain attributes, read by every call at no cost, that a user
            # may assign: each assignment is checked as `from_lmstudio` checks the option
            # (found by a probe: `model.model_name = ""` silently meant any loaded model,
            # and `= 42` failed inside the SDK). Any other public name is refused: a
            # misspelt setting (`model.tmeout = 5`) was stored and did nothing (a probe).
            check = _SETTINGS.get(name)
            if check is not None:
                value = check(value)
            elif name == "client":
                _check_client(self, value)
                if self.__dict__.get("client", value) is not value:
                    self._replace_client(value)
            elif is_unknown_name(self, name):
                raise _unknown_setting(self, name)
            super().__setattr__(name, value)

        def __delattr__(self, name: str) -> None:
            # Found by a review: `del model.timeout` made the next call fail on an
            # AttributeError of our own; a setting is set back, not deleted.
            if name in _SETTINGS or name == "client":
                none = _NONE_MEANS.get(name)
                raise InvalidInferenceArgumentError(
                    f"{type(self).__name__}.{name} cannot be deleted: assign it instead"
                    + (f" (None: {none})." if none else ".")
                )
            super().__delattr__(name)

    client: lms.Client | lms.AsyncClient
    model_name: str | None
    _adapter: LMStudioTypeAdapter
    max_concurrency: int
    timeout: float | None
    connect_timeout: float | None
    read_timeout: float | None

    def _replace_client(self, client: object) -> None:
        """Forget what belongs to the client a model had (the async model's connection)."""

    def _configure(
        self,
        model_name: object,
        max_concurrency: object,
        timeout: object,
        grammar: object,
        connect_timeout: object = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: object = DEFAULT_READ_TIMEOUT,
        strict_schema: object = False,
    ) -> None:
        """Check and store the settings both model classes take (`__setattr__` checks)."""
        self.model_name = model_name  # type: ignore[assignment]  # checked on assignment
        self._adapter = LMStudioTypeAdapter(
            grammar=check_flag("grammar", grammar),
            strict_schema=check_flag("strict_schema", strict_schema),
        )
        self.max_concurrency = max_concurrency  # type: ignore[assignment]
        self.timeout = timeout  # type: ignore[assignment]
        self.connect_timeout = connect_timeout  # type: ignore[assignment]
        self.read_timeout = read_timeout  # type: ignore[assignment]

    def _prepare(self, model_input: Any, output_type: Any, kwargs: dict[str, Any]) -> Request:
        args, plan = self._settings(output_type, kwargs)
        prompt = self._adapter.format_input(model_input)
        return Request(prompt, plan, args, args.model or self.model_name)

    def _settings(
        self, output_type: Any, kwargs: dict[str, Any]
    ) -> tuple[PredictionArgs, OutputPlan]:
        """Check what a call's inputs share: its keywords and its output type."""
        args = parse_inference_kwargs(kwargs) if kwargs else NO_ARGS
        plan = self._adapter._kept_plan(output_type)
        if args.config and "structured" in args.config:
            if plan.response_format is not None:
                raise InvalidInferenceArgumentError(
                    "Both an output type and config['structured'] were given: pass only one."
                )
            return _structured_from_config(args, self._adapter._kept_plan)
        return args, plan

    def _prepare_batch(
        self, model_input: Any, output_type: Any, kwargs: dict[str, Any]
    ) -> tuple[list[Request], int]:
        if not isinstance(model_input, list | tuple):
            single = isinstance(model_input, str)
            one = " (a str is one input: call the model with it)" if single else ""
            raise InvalidInferenceArgumentError(  # not "batch()": generate_batch, reply_batch
                # and parse on a list come here too (found by a probe)
                f"A batch takes a list of inputs, got {type(model_input).__name__}{one}."
            )
        # None is the model's own, as for every other call setting (found by a probe: a
        # wrapper passing its defaults on was refused).
        given = kwargs.pop("max_concurrency", None)
        limit = check_concurrency(self.max_concurrency if given is None else given)
        args, plan = self._settings(output_type, kwargs)  # every item's: checked once
        key, lookups = args.model or self.model_name, BatchLookups()
        made = time.monotonic()  # one reading: the items share one check of the traits
        requests = []
        for index, item in enumerate(model_input):
            try:
                prompt = self._adapter.format_input(item)
                requests.append(Request(prompt, plan, args, key, lookups, made))
            except OutlinesLMStudioError as exc:
                in_batch_item(exc, index)
                raise
        return requests, limit

    def _closed(self, key: str | None = None) -> LMStudioConnectionError | None:
        """Return the error for a call through a client that cannot send, or ``None``.

        A client cannot send once closed, nor (an ``AsyncClient``) from an event loop other
        than the one that opened it.
        """
        host, model = client_host(self.client), key or self.model_name
        if client_closed(self.client):
            in_a_loop = isinstance(self.client, lms.AsyncClient)
            return closed_client_error(host, model, in_a_loop=in_a_loop)
        if client_in_other_loop(self.client):
            return other_loop_error(host, model)
        return None

    def _error(self, exc: BaseException, key: str | None, stage: Stage) -> BaseException:
        closed = self._closed(key)  # whatever the SDK raised, this is why
        if closed is not None:
            release_unsent(exc)
            return closed
        host = client_host(self.client)
        translated = translate_sdk_error(
            exc,
            host=host,
            model=key or self.model_name,
            stage=stage,
            searched=searched(self.client),
        )
        if (
            isinstance(translated, LMStudioConnectionError)
            and isinstance(self.client, lms.Client)  # blocking: never on an event loop
            and host is not None
            and not searched(self.client)
            and "not reachable" in str(exc)
        ):
            # A host given where another server answers (a web app's 404): say so, rather
            # than "Is LM Studio running?" (found by a probe). One probe, on failure only.
            other = other_server_error(host, key or self.model_name)
            if other is not None:
                return other
        return translated if translated is not None else exc

    def _failure(self, exc: Exception) -> Exception:
        """Return the error an effect's failure means: a closed client, else ``exc`` itself.

        A client closed under a call fails with errors that are not the SDK's own
        (``RuntimeError``, a cancelled future); the flow sees ours instead.
        """
        if isinstance(exc, OutlinesLMStudioError | lms.LMStudioError):
            return exc  # ours already, or the flow's to translate (with its stage)
        closed = self._closed()
        if closed is None:
            return exc
        release_unsent(exc)
        return closed

    def _deadline(self, request: Request) -> float | None:
        """Return when a call runs out of time (``time.monotonic()``), if it has a limit."""
        timeout = request.args.timeout or self.timeout
        return None if timeout is None else time.monotonic() + timeout

    def _wait_error(
        self, request: Request, by_deadline: bool, started: bool = True, connected: bool = True
    ) -> LMStudioTimeoutError:
        """Return the error of a wait that ran out: the call's own limit, or ``read_timeout``.

        ``started``: the prediction was open (so it was cancelled), not still being prepared
        (a model lookup or load, an image upload). ``connected``: the connection to LM Studio
        was complete (the websocket opened and authenticated).
        """
        if by_deadline:
            seconds = request.args.timeout or self.timeout or 0
            return self._timeout_error(request.key, seconds, started, connected)
        return LMStudioTimeoutError(
            f"LM Studio sent nothing for {self.read_timeout or 0:g} s; "
            f"{_given_up(started, connected)}",
            host=client_host(self.client),
            model=request.key or self.model_name,
            hint="Pass a larger read_timeout= to from_lmstudio if the model needs longer "
            "(loading a large model, a long prompt, or waiting its turn: LM Studio runs a "
            "few predictions at once, 4 by default, and a queued one hears nothing; bound "
            "your concurrent calls, e.g. with an asyncio.Semaphore or model.batch), or "
            "check the server.",
        )

    def _connect_error(self, exc: BaseException) -> LMStudioConnectionError:
        """Our error for a connection that was not completed in time, or not answered."""
        host = client_host(self.client)
        if isinstance(exc, TimeoutError):
            what = (
                f"LM Studio did not complete the connection (websocket handshake and "
                f"authentication) within {self.connect_timeout or 0:g} s"
            )
            if not isinstance(self.client, lms.Client):
                what += f"; {ASYNC_CLIENT_CLOSED}"
            slow = "; pass a larger connect_timeout= to from_lmstudio for a slow link"
        else:
            what = f"LM Studio did not answer at {host}: {type(exc).__name__}"
            what += f": {exc}" if str(exc) else " (no detail)"
            slow = f"; {SLOW_PROBE}" if isinstance(exc, httpx.TimeoutException) else ""
        hint = files_hint(exc) if out_of_files(exc) else server_hint(slow, searched(self.client))
        return LMStudioConnectionError(what, host=host, model=self.model_name, hint=hint)

    def _timeout_error(
        self, key: str | None, seconds: float, started: bool = True, connected: bool = True
    ) -> LMStudioTimeoutError:
        return LMStudioTimeoutError(
            f"{DEADLINE_PASSED} {seconds:g} s; {_given_up(started, connected)}",
            host=client_host(self.client),
            model=key or self.model_name,
            hint="Pass a larger timeout= (per call or on from_lmstudio), or check the server.",
        )


DEADLINE_PASSED = "No complete answer from LM Studio within"
"""How the error of a call whose ``timeout=`` ran out begins."""


def _given_up(started: bool, connected: bool = True) -> str:
    """Say what a call that ran out of time left behind, or where it was."""
    if started:
        return "a cancel of its prediction was sent to LM Studio."
    if not connected:  # found by a probe: a lookup, load or upload was blamed
        # Found by a soak: a first call with timeout=0.05 ran out while connecting, and
        # the message blamed the server alone.
        return (
            "the connection to LM Studio was not complete yet (the websocket's opening and "
            "authentication, which the first call on a client waits for): if the limit was "
            "too short to connect as well, pass a larger one; otherwise check that LM Studio "
            "is what answers at the host."
        )
    return "no prediction had started yet (a model lookup or load, or an image upload)."


def no_backend(backend: str | None) -> None:
    if backend is not None:
        raise InvalidInferenceArgumentError(
            f"backend={backend!r} has no effect: LM Studio does the constrained decoding itself. "
            "Leave backend unset."
        )


def in_batch_item(exc: OutlinesLMStudioError, index: int) -> None:
    """Say in a bad input's error which item of a batch it is (``Batch item 50: ...``).

    The message itself, not a note: a note shows only in a full traceback, and
    ``str(exc)`` in a log line lost which of 100 inputs was wrong (found by a probe).
    """
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"Batch item {index}: {exc.args[0]}", *exc.args[1:])
    else:
        exc.add_note(f"(in batch item {index})")


def check_retries(value: object) -> int:
    number = real_number(value)
    if not isinstance(number, int):  # a wrong type: a TypeError
        raise InvalidInferenceArgumentError(f"retries must be an int >= 0, got {describe(value)}.")
    if not 0 <= number <= MAX_COUNT:  # a count, checked as every other count is
        given = describe(value, 40)
        raise InvalidInferenceValueError(
            f"retries must be an int from 0 to {MAX_COUNT:,}, got {given}. Each re-ask "
            "adds the reply and its errors to the chat: a few are what helps."
        )
    return number
