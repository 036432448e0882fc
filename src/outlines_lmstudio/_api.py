"""The public methods of both model classes, written once over the fronts' three drivers.

Each method checks its arguments (before any I/O), builds a flow (`_flow`) and hands it to
the front: `ModelApi._run` (a whole result), `ModelApi._iterate` (a stream) or
`ModelApi._map` (a batch). `LMStudio` returns the value; `AsyncLMStudio` returns an
awaitable (or an async iterator), so ``await model.generate(...)`` works as Outlines expects,
and bad input still raises at the call (on the async class, a large image that cannot be sent
raises when awaited: it is read in a worker thread; still before any request is sent).
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Iterator, Mapping, Sequence
from functools import partial
from operator import attrgetter
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    NoReturn,
    Self,
    SupportsIndex,
    TypedDict,
    TypeVar,
    cast,
)

import lmstudio as lms
from outlines.models.base import ModelTypeAdapter

from . import _flow
from ._adapter import LMStudioTypeAdapter
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_READ_TIMEOUT,
    AskedTraits,
    Common,
    Completion,
    Request,
    check_retries,
    for_a_stand_in,
    is_batch,
    no_backend,
)
from ._config import NO_OUTPUT_TYPE, describe, did_you_mean, missing_output_type, shortened
from ._flow import ChunkSink, Flow, Sink
from ._output import identity
from ._reply import Reply, ReplyChunk
from ._sdk_errors import client_host
from .errors import InvalidClientError, InvalidInferenceArgumentError

__all__ = [
    "OPTIONS",
    "ModelOptions",
    "AsyncReplyStream",
    "ModelApi",
    "ReplyStream",
    "SyncReplyStream",
    "check_options",
    "shows_options",
]

_TEXT: Callable[[Completion], str] = attrgetter("text")  # a completion's text, in C


_FIRST_ANSWER: dict[int, tuple[weakref.ref[Any], str]] = {}
"""Per model handle (by id, while it lives): the model that first answered through it."""


class ReplyStream:
    """The pieces of one streamed reply, reasoning and answer, as they arrive.

    What ``reply_stream`` returns: a `SyncReplyStream` from `LMStudio` (read it with
    ``for``), an `AsyncReplyStream` from `AsyncLMStudio` (``async for``). Iterate it for
    `ReplyChunk` values; once the stream has ended, `reply` holds the finished `Reply`.
    Leaving early (``break``, ``close``/``aclose``) cancels the prediction on the server.
    Annotate with the front's class to iterate (this one gives `reply` only).
    """

    _is_async = False

    def __init__(self, chunks: Any, sink: ChunkSink) -> None:
        self._chunks = chunks
        self._sink = sink

    @property
    def reply(self) -> Reply | None:
        """The finished reply (answer, reasoning, stats); ``None`` until the stream ends."""
        return self._sink.reply

    def _other_front(self, how: str) -> TypeError:
        """Return the error of the other front's way of reading or leaving, naming this one's."""
        model, read, leave = (
            ("AsyncLMStudio", "async for", "await aclose()")
            if self._is_async
            else ("LMStudio", "for", "close()")
        )
        return TypeError(
            f"This reply_stream comes from {model}, so {how} does not work on it: "
            f"read it with {read} and leave it early with {leave}."
        )


class SyncReplyStream(ReplyStream):
    """The `ReplyStream` of `LMStudio`: read it with ``for``, leave it early with ``close()``."""

    def __iter__(self) -> Iterator[ReplyChunk]:
        return self

    def __next__(self) -> ReplyChunk:
        chunk: ReplyChunk = next(self._chunks)
        return chunk

    def close(self) -> None:
        """Leave the stream early (cancels the prediction on the server)."""
        self._chunks.close()

    if not TYPE_CHECKING:  # the other front's ways, refused with a message (type checkers
        # flag them: found by a probe, a plain `for` over an async stream passed them)

        def __aiter__(self):
            raise self._other_front("async for")

        async def aclose(self):
            raise self._other_front("aclose()")


class AsyncReplyStream(ReplyStream):
    """The `ReplyStream` of `AsyncLMStudio`: read it with ``async for``, leave with ``aclose``."""

    _is_async = True

    def __aiter__(self) -> AsyncIterator[ReplyChunk]:
        return self

    async def __anext__(self) -> ReplyChunk:
        chunk: ReplyChunk = await anext(self._chunks)
        return chunk

    async def aclose(self) -> None:
        """Leave the stream early (cancels the prediction on the server)."""
        await self._chunks.aclose()

    if not TYPE_CHECKING:  # see SyncReplyStream

        def __iter__(self):
            raise self._other_front("for")

        def close(self):
            raise self._other_front("close()")


OPTIONS = (
    "max_concurrency",
    "timeout",
    "connect_timeout",
    "read_timeout",
    "grammar",
    "strict_schema",
)
"""The options of a model (`from_lmstudio` documents each)."""


class ModelOptions(TypedDict, total=False):
    """`OPTIONS` for type checkers: the model classes take them as ``**options``.

    Found by a probe: ``LMStudio(client, "m", timout=5)`` passed the type checkers (the
    classes take ``**options`` and name an unknown one at run time), where
    `from_lmstudio`'s overloads caught it.
    """

    max_concurrency: int
    timeout: float | None
    connect_timeout: float | None
    read_timeout: float | None
    grammar: bool
    strict_schema: bool


_Init = TypeVar("_Init", bound=Callable[..., None])


def shows_options(client_type: type) -> Callable[[_Init], _Init]:
    """Show a model class's ``__init__`` as `ModelApi`'s, for ``client`` (`inspect`, `help`).

    The classes' ``__init__`` take ``*args`` and ``**options`` and hand them on; `ModelApi`
    names the options, and its ``*args`` and ``**options`` take only what it refuses, an
    extra positional argument or an unknown option, so that it raises
    `InvalidInferenceArgumentError` naming the options (Python's own ``TypeError`` would
    not). What is shown: the client, ``model_name`` and the options (found by a probe:
    ``(client, *args, **options)`` hid them). A ``model_name`` given both ways is refused
    here (a review: Python's ``TypeError`` named the private `ModelApi`).
    """

    def show(init: _Init) -> _Init:
        @functools.wraps(init)
        def checked(self: ModelApi, client: Any, *args: Any, **options: Any) -> None:
            if args and "model_name" in options:
                raise InvalidInferenceArgumentError(
                    f"{type(self).__name__} was given model_name twice: {args[0]!r:.200} by "
                    f"position and model_name={options['model_name']!r:.200}; give it once."
                )
            init(self, client, *args, **options)

        signature = inspect.signature(ModelApi.__init__)
        catch_all = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        shown = [p for p in signature.parameters.values() if p.kind not in catch_all]
        shown[1] = shown[1].replace(annotation=client_type)  # after self
        checked.__signature__ = signature.replace(parameters=shown)  # type: ignore[attr-defined]
        return cast(_Init, checked)

    return show


def check_options(where: str, options: Mapping[str, object]) -> None:
    """Refuse an option name a model does not take, listing those it takes.

    Raises
    ------
    InvalidInferenceArgumentError
        If an option is unknown.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        # Found by a probe: model="..." (the name a call takes) got only the list.
        model = " The model goes as model_name= (or second, after the client)." * (
            "model" in unknown
        )
        close = "".join(did_you_mean(name, OPTIONS, "=") for name in unknown if name != "model")
        raise InvalidInferenceArgumentError(
            f"Unknown option(s) {[shortened(name) for name in unknown]} for {where}.{close} "
            f"Accepted: {', '.join(OPTIONS)}. "
            f"Inference settings (temperature, max_tokens, ...) go on each call.{model}"
        )


class ModelApi(Common):
    """The Outlines API and the typed helpers, for both fronts.

    Parameters
    ----------
    client
        The front's ``lmstudio`` client (see `from_lmstudio` for every setting).
    """

    _client_class: ClassVar[type[lms.Client] | type[lms.AsyncClient]]
    _handles: Any
    _traits: Any

    # The options by name (_configure checks every value at run time). *args and **options
    # only refuse (`shows_options`); `from_lmstudio`'s overloads type the options.
    def __init__(
        self,
        client: Any,
        model_name: str | None = None,
        *args: Any,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        grammar: bool = False,
        strict_schema: bool = False,
        **options: Any,
    ) -> None:
        where = type(self).__name__
        if args:
            raise InvalidInferenceArgumentError(
                f"{where} takes the client and the model key by position, and its options "
                f"by name ({', '.join(f'{o}=' for o in OPTIONS)}); got {len(args)} more "
                f"positional argument(s): {describe(args)}."
            )
        check_options(where, options)
        wanted = self._client_class.__name__
        if not isinstance(client, self._client_class):
            raise InvalidClientError(
                f"{type(self).__name__} needs an lmstudio.{wanted}, got {type(client).__name__}. "
                "from_lmstudio(client) picks the model class for either kind of client."
                + for_a_stand_in(client)
            )
        self.client = client
        self._configure(
            model_name,
            max_concurrency,
            timeout,
            grammar,
            connect_timeout,
            read_timeout,
            strict_schema,
        )

    def __repr__(self) -> str:
        """Say which model on which host, and the settings that differ from the defaults.

        A notebook cell showed ``<outlines_lmstudio._sync.LMStudio at 0x...>`` (found by a
        probe). No I/O: a client that has not found its host yet shows none.
        """
        cls = type(self)
        module = cls.__module__
        where = "outlines_lmstudio" if module.startswith("outlines_lmstudio.") else module
        parts = [f"model={self.model_name!r}", f"host={client_host(self.client)!r}"]
        adapter = self._adapter
        for name, value, default in (
            ("grammar", getattr(adapter, "grammar", False), False),
            ("strict_schema", getattr(adapter, "strict_schema", False), False),
            ("timeout", self.timeout, None),
            ("connect_timeout", self.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            ("read_timeout", self.read_timeout, DEFAULT_READ_TIMEOUT),
            ("max_concurrency", self.max_concurrency, DEFAULT_MAX_CONCURRENCY),
        ):
            if value != default:
                parts.append(f"{name}={value!r}")
        return f"{where}.{cls.__qualname__}({', '.join(parts)})"

    # -- copies: a model holds a live connection ----------------------------------------------
    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        """Refuse to pickle the model, whatever its state, saying what to do instead.

        Raises
        ------
        TypeError
            Always: the model holds its client's live connection to LM Studio.
        """
        raise TypeError(self._no_copy("be pickled"))

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        """Refuse a deep copy (it would copy the connection); see `__copy__`.

        Raises
        ------
        TypeError
            Always, as pickling does.
        """
        raise TypeError(self._no_copy("be deep-copied (copy.deepcopy)"))

    def __copy__(self) -> Self:
        """Return another model on the same client, with the same settings.

        Made as `from_lmstudio` makes one, not by copying this one's state: the copy has its
        own batch pool and fork bookkeeping, and does not own a client this model entered
        (its ``close()`` leaves it open), as a second model on that client would not. Its
        type adapter is a copy too (an adapter of your own class is shared):
        ``copy.type_adapter.grammar = True`` changed the original's grammar mode as well
        (found by a probe), where every other setting is the copy's own.
        """
        copied = type(self)(
            self.client,
            self.model_name,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
        )
        # grammar and strict_schema: the same, the copy's own. An adapter of the user's own
        # class is shared, as it was: it may not copy (found by a review).
        adapter = self._adapter
        copied._adapter = copy.copy(adapter) if type(adapter) is LMStudioTypeAdapter else adapter
        return copied

    def _no_copy(self, what: str) -> str:
        name = type(self).__name__
        client = self._client_class.__name__
        return (
            f"An {name} model cannot {what}: it holds a live connection to LM Studio, "
            f"through its lmstudio.{client}. Create the client and the model where they are "
            "used, e.g. in each worker process (in the pool's initializer: "
            "ProcessPoolExecutor(initializer=...) storing them in a global), and send only "
            "prompts and results between processes. copy.copy(model) gives another model "
            "on the same client."
        )

    @property
    def type_adapter(self) -> LMStudioTypeAdapter:
        """The type adapter every call plans its input and output type with.

        Outlines' convention: a replaced adapter is the one used (``grammar`` and
        ``strict_schema`` are its settings).

        Raises
        ------
        InvalidInferenceArgumentError
            (a ``TypeError``) If a new adapter is not an `LMStudioTypeAdapter`: the
            calls need its plans, which other adapters do not make.
        """
        return self._adapter

    @type_adapter.setter
    def type_adapter(self, adapter: ModelTypeAdapter) -> None:
        if not isinstance(adapter, LMStudioTypeAdapter):
            raise InvalidInferenceArgumentError(
                f"type_adapter must be an outlines_lmstudio.LMStudioTypeAdapter, got "
                f"{type(adapter).__name__}: the model plans every call with it. Its settings "
                "are also options of from_lmstudio(client, key, grammar=..., strict_schema=...)."
            )
        self._adapter = adapter

    @type_adapter.deleter
    def type_adapter(self) -> None:
        # Found by a probe: Python's "property ... has no deleter", where deleting a
        # setting is refused by us, saying what to do instead.
        raise InvalidInferenceArgumentError(
            f"{type(self).__name__}.type_adapter cannot be deleted: assign another "
            "outlines_lmstudio.LMStudioTypeAdapter instead."
        )

    # -- what each front provides ------------------------------------------------------------
    def _run(self, flow: Flow[Any]) -> Any:
        """Drive a flow to its result (async: an awaitable of it)."""
        raise NotImplementedError

    def _iterate(self, request: Request, sink: Sink) -> Any:
        """Stream a prediction through a sink (async: an async iterator)."""
        raise NotImplementedError

    def _complete_then(self, request: Request, finish: Callable[[Completion], Any]) -> Any:
        """Complete a request and return ``finish`` of it (async: an awaitable).

        What a flow of one `Complete` step does (`_flow.generate`, `_flow.parse` without
        retries), without stepping that flow: the `_complete` effect translates its own errors (it
        drives the prediction flow).
        """
        raise NotImplementedError

    def _map(self, flows: list[Flow[Any]], limit: int, requests: Sequence[Request] = ()) -> Any:
        """Drive several flows concurrently, at most ``limit`` at once; `batch_result`.

        ``requests``: the flows' requests (the async front normalises their images first).
        """
        raise NotImplementedError

    # -- effects that need no I/O ------------------------------------------------------------
    def _call_deadline(self, effect: _flow.Deadline) -> float | None:
        return self._deadline(effect.request)

    def _completion_deadline(self, effect: _flow.Complete) -> float | None:
        """Return when a `Complete` times out: at the call's deadline, else its whole limit."""
        return self._deadline(effect.request) if effect.deadline is None else effect.deadline

    def _forget(self, effect: _flow.Forget) -> None:
        key: Hashable = effect.key
        self._handles.forget(self.client, key, effect.handle)

    def _answered(self, effect: _flow.Answered) -> str | None:
        handle = effect.handle
        entry = _FIRST_ANSWER.get(id(handle))
        if entry is not None and entry[0]() is handle:
            return entry[1]
        if effect.record:  # a handle is unhashable (the SDK's __eq__): keyed by its id
            key = id(handle)
            _FIRST_ANSWER[key] = (
                weakref.ref(handle, lambda _: _FIRST_ANSWER.pop(key, None)),
                effect.model_key,
            )
        return None

    def _note_traits(self, effect: _flow.NoteTraits) -> None:
        self._traits.put(self.client, effect.identifier, AskedTraits(effect.traits, effect.at))

    # -- Outlines API ------------------------------------------------------------------------
    def __call__(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate a response (``model(prompt, T)``; async: awaitable); see `generate`.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        backend
            Must be ``None``: LM Studio does the constrained decoding itself.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Any
            The generated text.
        """
        if backend is not None:  # checked here: this runs on every call
            no_backend(backend)
        return self.generate(model_input, output_type, **inference_kwargs)

    def stream(
        self,
        model_input: Any,
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Stream a response, as `generate_stream` does (``backend`` must be ``None``).

        Unlike Outlines' own method, bad input raises here, at the call, on both classes
        (on the async class, a large image or a grammar-mode term that cannot be sent
        raises at the first item: both are made ready in a worker thread).

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        backend
            Must be ``None``: LM Studio does the constrained decoding itself.
        **inference_kwargs
            As for `generate` (``reasoning_parsing``, ``max_tokens``, ...).

        Returns
        -------
        Iterator[str] | AsyncIterator[str]
            Text fragments as they arrive (simple types: the rendered value, once).

        Raises
        ------
        UnsupportedInputError, InvalidPromptError, InvalidImageError
            At the call, for a bad input (as for `generate`).
        UnsupportedOutputTypeError, InvalidSchemaError, UnsupportedGrammarError
            At the call, for an output type LM Studio cannot be asked for (as for
            `generate`).
        InvalidInferenceArgumentError, InvalidInferenceValueError
            At the call, for a bad ``backend`` or keyword (as for `generate`).
        ReasoningTruncatedError, EmptyAnswerError
            While reading, on a reasoning model that wrote no answer (as for `generate`).
        LMStudioConnectionError, LMStudioModelNotFoundError, LMStudioTimeoutError
            While reading: LM Studio unreachable, no such model, no end within ``timeout``.
        LMStudioPredictionError
            While reading, if LM Studio failed or ended the prediction.
        """
        if backend is not None:
            no_backend(backend)
        return self.generate_stream(model_input, output_type, **inference_kwargs)

    def batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        backend: str | None = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate responses to several inputs, as `generate_batch` does (no ``backend``)."""
        no_backend(backend)
        return self.generate_batch(model_input, output_type, **inference_kwargs)

    def generate(self, model_input: Any, output_type: Any = None, **inference_kwargs: Any) -> Any:
        """Generate a complete response (async: awaitable).

        Parameters
        ----------
        model_input
            A str, a list ``[prompt, Image, ...]``, an Outlines ``Chat`` or an
            ``lmstudio.Chat``.
        output_type
            ``None`` for free text, or a structured output type.
        **inference_kwargs
            ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
            ``repeat_penalty``, ``stop``, ``reasoning_parsing``, ``config``, ``preset``,
            ``model``, ``timeout`` and the SDK callbacks (``on_message``,
            ``on_first_token``, ``on_prediction_fragment``,
            ``on_prompt_processing_progress``).

        Returns
        -------
        str
            The generated text (a JSON document for JSON-schema output types).

        Raises
        ------
        UnsupportedInputError
            (a ``TypeError`` and a ``ValueError``) If the input has a type or shape LM
            Studio cannot take, or holds an image for a model without vision.
        InvalidPromptError
            If the prompt, list or chat is empty.
        InvalidImageError
            If an image cannot be read or converted.
        UnsupportedOutputTypeError
            (a ``TypeError``) If the output type cannot be requested from LM Studio (a
            ``Regex`` or ``CFG`` without ``grammar=True``; grammar mode on a model that is
            not GGUF).
        InvalidSchemaError
            If a JSON schema is malformed or unsafe.
        UnsupportedGrammarError
            If, in grammar mode, a regex or grammar uses a construct GBNF cannot express.
        InvalidInferenceArgumentError
            (a ``TypeError``) If a keyword is unknown, mistyped or given twice.
        InvalidInferenceValueError
            (a ``ValueError``) If a keyword's value is out of range.
        ReasoningTruncatedError
            On a reasoning model, if the token budget ran out before the answer began.
        EmptyAnswerError
            On a reasoning model, if it reasoned and then wrote no answer.
        LMStudioConnectionError
            If LM Studio cannot be reached, or the connection was lost.
        LMStudioModelNotFoundError
            If there is no such model, none is loaded, or it is not an LLM.
        LMStudioTimeoutError
            If there is no complete answer within ``timeout``.
        LMStudioPredictionError
            If LM Studio failed the prediction, ended it early or could not load the model.

        Every error up to `InvalidInferenceValueError` is raised before any prediction is
        sent (on the async class, at the ``await``).
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        if request.plan.render is identity:  # most calls: no render to wrap and call
            return self._complete_then(request, _TEXT)
        return self._complete_then(request, partial(_flow.rendered, request))

    def generate_stream(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> Any:
        """Stream a response; leaving early (``break``, ``close``) cancels it on the server.

        Outlines declares the async form ``async def``; here it is a plain method on both
        classes, so that bad input raises at the call, before any request is sent. On the
        async class a large image is read, and a grammar-mode term converted, in a worker
        thread, so one that cannot be sent raises at the first item instead (still before
        any request is sent).

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Iterator[str] | AsyncIterator[str]
            Text fragments as they arrive (simple types: the rendered value, once).
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        return self._iterate(request, _flow.sink_for_stream(request))

    def generate_batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate responses to several inputs concurrently, in input order.

        Parameters
        ----------
        model_input
            The inputs.
        output_type
            The output type, the same for every input.
        **inference_kwargs
            As for `generate`, plus ``max_concurrency``.

        Returns
        -------
        list[str]
            One response per input, in input order (async: awaitable).

        Raises
        ------
        BatchGenerationError
            If any item failed once sent (or on the model's own check, such as images
            for a model without vision); it holds the other results and each error by
            index.

        An item that is bad in itself (an empty prompt, an unreadable image...) or a bad
        output type or keyword raises its own error, as `generate` raises it, with the
        item's index in the message (``Batch item 1: ...``), before anything is sent.
        """
        requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
        return self._map([_flow.generate(r) for r in requests], limit, requests)

    # -- typed results -----------------------------------------------------------------------
    def parse(
        self,
        model_input: Any,
        output_type: Any = NO_OUTPUT_TYPE,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate and return a validated value of ``output_type`` (async: awaitable).

        Parameters
        ----------
        model_input
            One input (as for `generate`), or a list (or tuple) of inputs (str, Chat or
            ``[prompt, Image, ...]`` lists), answered concurrently in order.
        output_type
            The type to return: a Pydantic model (an instance comes back), a
            dataclass, TypedDict, a dict or str JSON schema (the decoded JSON value comes
            back: a dict for an object schema, a list for an array schema, an int for
            ``{"type": "integer"}``...), int, Enum (a member comes back), Literal, ...
        retries
            How many times to re-ask, with the validation errors, when a reply
            does not validate.
        context
            Passed to the type's Pydantic validators as ``info.context`` (as
            ``model_validate_json(..., context=...)``), on every attempt.
        **inference_kwargs
            As for `generate` (plus ``max_concurrency`` for a list of inputs).

        Returns
        -------
        Any
            The value (a list of values for a list of inputs).

        Raises
        ------
        ParseError
            The reply does not validate (it carries the raw text and the errors).
        TruncatedOutputError
            The reply was cut off by ``max_tokens`` or the context length.
        InvalidInferenceArgumentError
            (a ``TypeError``) If ``output_type`` is missing, or ``max_concurrency`` is given
            for one input; and for a bad keyword, as for `generate`.
        BatchGenerationError
            For a list of inputs, instead of the errors above once sent: if any item
            failed (its ``ParseError``, ``TruncatedOutputError``... by index in
            ``.errors``, the other values in ``.results``), as `generate_batch`.

        Every other error `generate` raises is raised as it raises it, the errors about
        the input, the output type and the keywords before anything is sent.
        """
        if output_type is NO_OUTPUT_TYPE:
            raise missing_output_type("parse", inference_kwargs)
        return self._parse(model_input, output_type, retries, context, inference_kwargs)

    def parse_reply(
        self,
        model_input: Any,
        output_type: Any = NO_OUTPUT_TYPE,
        *,
        retries: int = 0,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """`parse`, also returning the reply the value came from and the replies rejected.

        For the value together with its token counts and timings (instructor's
        ``create_with_completion``): ``reply.stats`` of the accepted reply, and of each
        rejected one, the attempts that were asked again.

        Parameters
        ----------
        model_input
            As for `parse`: one input, or a list (or tuple) of inputs.
        output_type
            As for `parse`.
        retries
            As for `parse`.
        context
            As for `parse`.
        **inference_kwargs
            As for `parse`.

        Returns
        -------
        Parsed
            (async: an awaitable of it; a list of them for a list of inputs) ``value`` is
            what `parse` returns, ``reply`` the accepted reply (its text, reasoning and
            stats), ``rejected`` the replies that did not validate, in order.

        Raises
        ------
        ParseError, TruncatedOutputError
            As `parse` raises them (no reply validated).
        BatchGenerationError
            For a list of inputs, as `parse` raises it (``.results`` holds the
            `Parsed` of each item that succeeded).

        Every other error `parse` raises is raised as it raises it.
        """
        if output_type is NO_OUTPUT_TYPE:
            raise missing_output_type("parse_reply", inference_kwargs)
        return self._parse(model_input, output_type, retries, context, inference_kwargs, True)

    def _parse(
        self,
        model_input: Any,
        output_type: Any,
        retries: int,
        context: Any,
        inference_kwargs: dict[str, Any],
        with_replies: bool = False,
    ) -> Any:
        """`parse`, or `parse_reply` (``with_replies``): a value, or a `Parsed`."""
        from outlines_lmstudio._typed import (  # typed results only (import time)
            validator_for,
            with_context,
        )

        retries = check_retries(retries)
        flow = _flow.parse_reply if with_replies else _flow.parse
        if is_batch(model_input):
            requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
            if not requests:
                # Still refuse a type parse cannot check, as for any other list (a probe).
                plan = self._settings(output_type, inference_kwargs)[1]
                with_context(validator_for(plan), context)
                return self._map([], limit)
            # One validator for all (one plan): a type parse cannot check raises here.
            validator = with_context(validator_for(requests[0].plan), context)
            flows = [flow(r, retries, validator) for r in requests]
            return self._map(flows, limit, requests)
        if "max_concurrency" in inference_kwargs:
            raise InvalidInferenceArgumentError(
                "max_concurrency= applies to parse on a list of inputs (answered concurrently); "
                "this call has one input: drop it."
            )
        request = self._prepare(model_input, output_type, inference_kwargs)
        validator = with_context(validator_for(request.plan), context)
        if not (retries or with_replies or "on_message" in request.args.callbacks):
            # One step: no flow (with on_message the flow holds the message until the reply
            # validates)
            return self._complete_then(request, _flow.checked(request, validator))
        return self._run(flow(request, retries, validator))

    def parse_stream(
        self,
        model_input: Any,
        output_type: Any = NO_OUTPUT_TYPE,
        *,
        context: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Yield partial values while the reply streams, then the validated value.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `parse`.
        context
            As for `parse`: passed to the final value's Pydantic validators.
        **inference_kwargs
            As for `generate`.

        Returns
        -------
        Iterator[Any] | AsyncIterator[Any]
            Partial JSON values (dicts, lists, strings, each more complete than the
            last), then the final value of ``output_type``.

        Raises
        ------
        ParseError, TruncatedOutputError
            While iterating, as `parse` raises them: the final value does not validate,
            or the reply was cut off.
        InvalidInferenceArgumentError
            (a ``TypeError``) At the call, if ``output_type`` is missing; and for a bad
            keyword, as for `generate`.

        Every other error `generate` raises is raised as `generate_stream` raises it: the
        errors about the input, the output type and the keywords at the call, before
        anything is sent.
        """
        if output_type is NO_OUTPUT_TYPE:
            raise missing_output_type("parse_stream", inference_kwargs)
        request = self._prepare(model_input, output_type, inference_kwargs)
        return self._iterate(request, _flow.sink_for_parse_stream(request, context))

    # -- the answer apart from the reasoning -------------------------------------------------
    def reply(self, model_input: Any, output_type: Any = None, **inference_kwargs: Any) -> Any:
        """Generate a response; return its answer, the model's reasoning and the stats.

        Parameters
        ----------
        model_input
            As for `generate`.
        output_type
            As for `generate`.
        **inference_kwargs
            As for `generate` (``reasoning_parsing``, ``max_tokens``, ...).

        Returns
        -------
        Reply
            (async: an awaitable of it) ``text`` is exactly what `generate` returns,
            ``reasoning`` is ``""`` when the model did not reason, and ``stats`` has the
            token counts, stop reason and timings.

        Raises
        ------
        UnsupportedInputError, InvalidPromptError, InvalidImageError
            For a bad input, before anything is sent (as for `generate`).
        UnsupportedOutputTypeError, InvalidSchemaError, UnsupportedGrammarError
            For an output type LM Studio cannot be asked for (as for `generate`).
        InvalidInferenceArgumentError, InvalidInferenceValueError
            For a bad keyword, before anything is sent (as for `generate`).
        ReasoningTruncatedError
            On a reasoning model, if the token budget ran out before the answer began
            (its ``.reasoning`` holds the reasoning so far).
        EmptyAnswerError
            On a reasoning model, if it reasoned and then wrote no answer.
        LMStudioConnectionError, LMStudioModelNotFoundError, LMStudioTimeoutError
            LM Studio unreachable, no such model, no complete answer within ``timeout``.
        LMStudioPredictionError
            If LM Studio failed the prediction, ended it early or could not load the model.
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        return self._run(_flow.reply(request))

    def reply_batch(
        self,
        model_input: list[Any] | tuple[Any, ...],
        output_type: Any = None,
        **inference_kwargs: Any,
    ) -> Any:
        """Generate responses to several inputs concurrently; a `Reply` for each, in order.

        Takes the arguments of `generate_batch`; returns ``list[Reply]`` (async: awaitable).
        Raises what `generate_batch` raises: `BatchGenerationError` if any item failed
        once sent (``.results`` holds the other items' `Reply`).
        """
        requests, limit = self._prepare_batch(model_input, output_type, inference_kwargs)
        return self._map([_flow.reply(r) for r in requests], limit, requests)

    def reply_stream(
        self, model_input: Any, output_type: Any = None, **inference_kwargs: Any
    ) -> Any:
        """Stream a response as `ReplyChunk` pieces, reasoning included.

        Takes the arguments of `generate`. Returns a `ReplyStream`: a `SyncReplyStream`
        (iterate it with ``for``), or on `AsyncLMStudio` an `AsyncReplyStream` (``async
        for``); once it has ended, its ``reply`` holds the `Reply`.
        """
        request = self._prepare(model_input, output_type, inference_kwargs)
        sink = ChunkSink(request.plan.render, whole_answer=request.plan.kind == "simple")
        chunks = self._iterate(request, sink)
        front = AsyncReplyStream if isinstance(chunks, AsyncIterator) else SyncReplyStream
        return front(chunks, sink)
