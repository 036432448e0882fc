"""Every decision of a call, written once, as sans-I/O flows that a sync and an async front drive.

A *flow* is a generator. It yields an `Effect` when it needs I/O (upload the images, resolve the
model, open a prediction, read the next fragments, reconnect, complete a whole request) and gets
the result back by ``send``, or the I/O error by ``throw``. It yields an `Emit` when it has
something for the caller (a text fragment, a partial value). It returns the call's result. The
flow decides everything: which request to send, whether to retry after a dropped socket, when to
reconnect, when to re-resolve a vanished model, how to split reasoning from the answer, when a
reply is truncated, what to re-ask in ``parse``, when a partial value has changed, how batch
results and errors are assembled. The fronts (`_sync.py`, `_async.py`) only perform I/O: SDK
calls, threads or tasks, timeouts and signals. Each effect names the front method that performs
it (`Effect.method`), so a front's driver loop is a few lines.

Why this mechanism rather than writing async code and generating the sync code (httpcore's
``unasync``, lmstudio-python's test generation): the two fronts are not the same program with
``await`` removed. The sync front reads a stream in the caller's thread under a Ctrl-C guard and
uses a thread only for a deadline; the async front reads through a task so that cancelling the
caller still cancels on the server. A generated twin would carry every decision twice in the
tree (and twice in review), and the parts that must differ would need escape hatches. The
sans-I/O flow (httpx's ``Auth.auth_flow``) keeps one copy of each decision, lets unit tests drive
a flow with no server at all, and keeps the fronts short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import lmstudio as lms
import msgspec
from outlines.types import Choice

from ._common import DEADLINE_PASSED, Completion, ModelTraits, Request
from ._inputs import sdk_history
from ._reasoning import ReasoningSplitter, json_openers, plain_reply, reply_problem
from ._reply import Parsed, Reply, ReplyChunk, reply_stats, stop_reason
from ._sdk_errors import Stage, Unreadable, from_sdk, with_details
from ._silence import StalledWait
from .errors import (
    BatchGenerationError,
    LMStudioConnectionError,
    LMStudioModelNotFoundError,
    LMStudioPredictionError,
    LMStudioTimeoutError,
    OutlinesLMStudioError,
    ParseError,
    UnsupportedInputError,
    UnsupportedOutputTypeError,
)

if TYPE_CHECKING:
    from ._streams import UnreadResult
    from ._typed import Validator

from ._cache import SERVER_ERRORS
from ._effects import (
    Answered,
    Call,
    Complete,
    Deadline,
    Downloaded,
    Effect,
    Emit,
    Flow,
    Forget,
    Left,
    ModelInfo,
    NoteTraits,
    Open,
    Read,
    Reconnect,
    Resolve,
    Upload,
)
from ._sinks import (
    ChunkSink,
    Sink,
    as_reply,
    sink_for_parse_stream,
    sink_for_stream,
)

# The typed-result modules load on first use, from inside the functions that need them, by
# absolute name: a relative import run in a function reads ``__spec__.parent`` (a Python
# property) every time, two calls more on each `parse`.

__all__ = [
    "Call",
    "ChunkSink",
    "Complete",
    "Deadline",
    "Downloaded",
    "Effect",
    "Emit",
    "ErrorFactory",
    "Flow",
    "Answered",
    "Forget",
    "Left",
    "ModelInfo",
    "NoteTraits",
    "Open",
    "Read",
    "Reconnect",
    "Resolve",
    "Sink",
    "Upload",
    "as_reply",
    "batch_result",
    "checked",
    "failed_lookup",
    "note_failed_lookup",
    "generate",
    "parse",
    "parse_reply",
    "predict",
    "rendered",
    "reply",
    "sink_for_parse_stream",
    "sink_for_stream",
    "wait_limit",
]

T = TypeVar("T")
ErrorFactory: TypeAlias = Callable[[BaseException, "str | None", Stage], BaseException]


# -- the flows ------------------------------------------------------------------------------
_CUT_SHORT = {
    "modelUnloaded": "the model was unloaded while it answered",
    "userStopped": "it was stopped in LM Studio, not by this call",
    "failed": "LM Studio reports that it failed",
}
"""Stop reasons of a reply that LM Studio ended, not the model nor a limit of the call.

Such a reply is not a whole answer: it raises, rather than be taken for one (``max_tokens``
and the context length have their own errors where they matter). A reply that the call's
own stop ended (time up, Ctrl-C: the call has left) raises `Left`.
"""


def _dropped(exc: BaseException) -> bool:
    """Tell whether an SDK error is a lost websocket (not a refused connection)."""
    return (
        from_sdk(exc)  # ours is one too (see `errors`): a connection already given up on
        and isinstance(exc, lms.LMStudioWebsocketError)
        and "not reachable" not in str(exc)
    )


_NOT_FOUND = ("cannot find", "not found", "pathnotfound", "nomodelmatching", "no model")


def _wrong_domain(exc: lms.LMStudioError) -> str | None:
    """Name the kind of model the server found instead of an LLM (``generic.domainMismatch``)."""
    details = getattr(getattr(exc, "server_error", None), "display_data", None)
    if not isinstance(details, dict) or details.get("code") != "generic.domainMismatch":
        return None
    actual = details.get("actualDomain")
    return "an embedding model" if actual == "embedding" else f"a model of domain {actual!r}"


_LOAD_PREFIX = "Model get/load"
"""How the SDK begins the error LM Studio's getOrLoad channel ended with (its notice prefix):
the key was found, and getting or loading it failed."""


def failed_lookup(request: Request, errors: ErrorFactory) -> BaseException | None:
    """Return the error of the model lookup that failed earlier in the request's batch, if any.

    The batch's items for one model key share its lookup: once it has failed (a model
    that cannot load, an unknown key), the others, those waiting for it and those not yet
    started, fail with the same error and ask nothing (`BatchLookups`).
    """
    lookups = request.lookups
    failed = None if lookups is None else lookups.failed.get(request.key)
    if failed is None:
        return None
    error = _resolve_error(failed, request.key, errors)
    if error is not failed:
        error.__cause__ = failed
    return error


def note_failed_lookup(request: Request, exc: BaseException) -> None:
    """Keep a failed model lookup for the other items of the request's batch (`failed_lookup`).

    Not a lost connection (the items reconnect and ask again), nor anything but the SDK's
    errors (a caller that left, a time limit: that item's own).
    """
    lookups = request.lookups
    if lookups is not None and from_sdk(exc) and not _dropped(exc):
        lookups.failed.setdefault(request.key, exc)


def _resolve_error(exc: lms.LMStudioError, key: str | None, errors: ErrorFactory) -> BaseException:
    """Our error for a failed model lookup: not found only when the server says so.

    Like the SDK's server errors, ours carry LM Studio's error details (``server_error``).
    """
    return with_details(_lookup_error(exc, key, errors), exc)


def _lookup_error(exc: lms.LMStudioError, key: str | None, errors: ErrorFactory) -> BaseException:
    """`_resolve_error` without LM Studio's error details (``server_error``)."""
    error = errors(exc, key, "resolve")
    text = str(exc).lower()
    if key is None and isinstance(exc, lms.LMStudioClientError) and "no models" in text:
        return LMStudioModelNotFoundError(
            "LM Studio has no LLM loaded (an embedding model, if one is loaded, cannot answer "
            "prompts), and no model_name was given.",
            host=getattr(error, "host", None),
            hint="Load an LLM in LM Studio, or pass model_name to from_lmstudio.",
        )
    says_not_found = isinstance(exc, lms.LMStudioModelNotFoundError) or any(
        s in text for s in _NOT_FOUND
    )
    if isinstance(error, LMStudioConnectionError | LMStudioTimeoutError) or says_not_found:
        return error
    domain = _wrong_domain(exc)
    if domain is not None:
        return LMStudioModelNotFoundError(
            f"{key!r} is {domain}, not an LLM: LM Studio answers text prompts with LLMs only.",
            host=getattr(error, "host", None),
            model=key,
            hint="Pick an LLM: `outlines-lmstudio models` (or client.llm.list_downloaded()) "
            "lists them.",
        )
    if isinstance(error, OutlinesLMStudioError) and str(exc).startswith(_LOAD_PREFIX):
        # Found by a probe: an out-of-memory load was blamed on mismatched versions.
        return LMStudioPredictionError(
            f"LM Studio could not load model {key!r}: {' '.join(str(exc).split())}",
            host=getattr(error, "host", None),
            model=key,
            # A cancelled load failed for neither (found by a review: the emulator's reset)
            hint="The load was cancelled before it ended: ask again."
            if "loading was cancelled" in text
            else "A load fails most often for memory (unload other models, or pick a "
            "smaller quantisation or context length) or for an architecture this LM Studio "
            "runtime cannot run; LM Studio's server log says which.",
        )
    if isinstance(error, OutlinesLMStudioError):
        return LMStudioPredictionError(
            "LM Studio gave an unexpected reply when asked for "
            # found by a probe: "for model None"
            f"{'the loaded model' if key is None else f'model {key!r}'}: "
            f"{' '.join(str(exc).split())}",
            host=getattr(error, "host", None),
            model=key,
            hint="Check LM Studio's server log; the server and the lmstudio SDK versions "
            "may not match.",
        )
    return error


_CHOICE_HINT = (
    " (without grammar mode, a Choice of plain values is sent as one, as Literal and Enum "
    "always are)"
)


def _refusal(
    request: Request, traits: ModelTraits, identifier: str, *, sent: bool = False
) -> Exception | None:
    """Return the error refusing images for a model without vision, or grammar off llama.cpp.

    ``sent``: the request went out and LM Studio refused it (the cached traits let it
    through); else it is refused before anything is sent.
    """
    if request.prompt.image_count and not traits.vision:
        count = request.prompt.image_count
        what = (
            f"LM Studio refused the {count} image(s)"
            if sent
            else f"the {count} image(s) were not sent"
        )
        return UnsupportedInputError(
            f"{identifier!r} does not accept images: LM Studio reports no vision support for "
            f"it ({what}). Use a vision "
            "model (`outlines-lmstudio models --capability vision` lists them), or send "
            "text only."
        )
    if request.plan.kind == "grammar" and traits.format != "gguf":
        is_choice = isinstance(request.plan.output_type, Choice)
        return UnsupportedOutputTypeError(
            f"A llama.cpp GBNF grammar (grammar mode, or config['structured'] of type 'gbnf') "
            f"was {'sent' if sent else 'to be sent'}, but {identifier!r} is a "
            f"{traits.format!r} model (not GGUF), whose engine does not take GBNF. Use a GGUF "
            f"model, or express the constraint as a JSON schema{_CHOICE_HINT * is_choice}."
        )
    return None


_WHAT_UNLOADS = (
    "with LM Studio's JIT loading and its auto-evict "
    "(on by default), loading another model on demand unloads this one, so two models called "
    "at once unload each other. Load each model you call beforehand with no time-to-live "
    "(client.llm.load_new_instance(key, ttl=None), or `lms load KEY`), or turn auto-evict "
    "off in LM Studio's developer settings; else check what unloads it (a TTL, the UI)."
)


def _unloaded_error(
    request: Request, errors: ErrorFactory, *, shown: bool, began: bool = True
) -> BaseException:
    """Our error for a reply LM Studio ended because the model was unloaded (``modelUnloaded``).

    ``shown``: the caller had part of the reply already (so it was not asked again);
    otherwise the call had been retried once with the model loaded anew, and lost it again.
    ``began``: the model was unloaded while it answered; else before the prediction began
    (LM Studio found no model to predict with, once the retry had loaded it).
    """
    if began:
        what = (
            "the reply ended before the model finished it: the model was unloaded while it answered"
        )
    else:
        what = "the model was unloaded before the prediction began"
    if shown:  # once: it may have been unloaded on purpose (found by a probe: "keeps")
        what += " (part of the reply had been given out, so the call was not asked again)"
        hint = (
            "Call again: the next call finds the model (loading it, if LM Studio can). If "
            "something keeps unloading it: "
        )
    else:
        what += ", again after the call was retried once with the model loaded anew"
        hint = "Something keeps unloading the model: "
    return _failed_prediction(request, errors, what, hint + _WHAT_UNLOADS)


def _failed_prediction(
    request: Request, errors: ErrorFactory, what: str, hint: str
) -> BaseException:
    """Our `LMStudioPredictionError` saying ``what`` and ``hint``, or why the client failed."""
    error = errors(lms.LMStudioServerError(what), request.key, "predict")
    if not isinstance(error, LMStudioPredictionError):  # a closed client: that is why
        return error
    return LMStudioPredictionError(
        f"LM Studio failed the prediction: {what}", host=error.host, model=error.model, hint=hint
    )


class _Reply:
    """One attempt's reply as it arrives: answer apart from reasoning, and when it began.

    A whole reply read at once with no sign of reasoning (`plain_reply`) is taken as it is:
    most replies are, and no splitter is made for them.
    """

    def __init__(self, request: Request, clock: Callable[[], float]) -> None:
        self._tags = request.args.reasoning_tags()  # the call's reasoning_parsing, or <think>
        self._split: ReasoningSplitter | None = None
        self._plain: str | None = None  # the answer of a whole reply taken as it is
        self._plain_fragments: Sequence[lms.LlmPredictionFragment] = ()  # and its fragments
        self._clock = clock
        self.started = clock()  # before the prediction opens (`NoteTraits.at`)
        self._first_answer: float | None = None
        self._structured = request.plan.kind in ("json", "simple")  # a JSON document
        self._plan = request.plan  # its schema is read only if a splitter is needed
        self.restarts = 0  # times the answer so far proved to be reasoning

    @property
    def split(self) -> ReasoningSplitter:
        """The splitter the reply goes through (made when a reply needs one)."""
        if self._split is None:
            start, end = self._tags
            self._split = ReasoningSplitter(
                start_tag=start,
                end_tag=end,
                json_answer=self._structured,
                json_openers=json_openers(self._plan.schema),
            )
            if self._plain is not None:  # more came after a whole reply: split all of it
                tokens = sum(f.tokens_count for f in self._plain_fragments)
                # Its pieces were given out already; its tokens count if it was reasoning.
                self._split.feed(self._plain, "none", tokens_count=tokens)
                self._plain = None
        return self._split

    def feed(
        self,
        fragments: Sequence[lms.LlmPredictionFragment],
        arrived: Sequence[float] | None = None,
    ) -> list[ReplyChunk]:
        """Split fragments into answer and reasoning pieces.

        ``arrived`` holds the clock reading at which each fragment arrived, when they were
        read in one piece (a whole reply); ``None`` when they arrived just now.
        """
        if arrived is not None and self._split is None and self._plain is None:
            whole = self._take_plain(fragments, arrived)
            if whole is not None:
                return whole
        chunks: list[ReplyChunk] = []
        split = self._split if self._split is not None else self.split  # no call per read
        for index, fragment in enumerate(fragments):
            retractions = split.retractions
            pieces = split.feed(
                fragment.content, fragment.reasoning_type, tokens_count=fragment.tokens_count
            )
            if split.retractions != retractions:  # what began the answer was reasoning
                self._first_answer = None
                self.restarts += 1
                # This read's pieces are not handed out yet: they go out as what they are.
                chunks = [c if c.reasoning else ReplyChunk(c.text, True) for c in chunks]
            if self._first_answer is None:
                for piece in pieces:  # a loop, not any(...): it runs on every fragment
                    if not piece.reasoning:
                        at = self._clock() if arrived is None else arrived[index]
                        self._first_answer = at - self.started
                        break
            chunks += pieces
        return chunks

    def _take_plain(
        self, fragments: Sequence[lms.LlmPredictionFragment], arrived: Sequence[float]
    ) -> list[ReplyChunk] | None:
        """Take a whole reply with no sign of reasoning as it is; ``None`` if it has one."""
        parts = []
        for fragment in fragments:  # loops, not comprehensions: run on every call
            if fragment.reasoning_type != "none":
                return None
            parts.append(fragment.content)
        text = "".join(parts)
        if not plain_reply(text, *self._tags):
            return None
        self._plain = text
        self._plain_fragments = fragments
        for fragment, at in zip(fragments, arrived, strict=True):
            if fragment.content.strip():
                self._first_answer = at - self.started  # where the answer begins
                break
        return [ReplyChunk(text, False)] if text else []

    def close(self) -> list[ReplyChunk]:
        """End the reply; return the pieces held back until now."""
        return [] if self._plain is not None else self.split.close()

    def finish(
        self, result: lms.PredictionResult | UnreadResult, reason: str | None, identifier: str
    ) -> Completion:
        """Make the completion of the finished reply; raise if it has no usable answer.

        ``reason`` is the stop reason of ``result`` (read once, by the caller);
        ``identifier`` is the loaded copy the prediction was sent to.
        """
        answered = None if result.model_info is None else result.model_info.model_key
        if self._plain is not None:  # all answer: nothing to judge; stats when asked
            later = partial(
                reply_stats,
                result.stats,
                model_key=answered,
                identifier=identifier,
                reasoning_tokens=0,
                time_to_first_answer_token=self._first_answer,
            )
            return Completion(self._plain, reason, "", later)
        stats = reply_stats(
            result.stats,
            model_key=answered,
            identifier=identifier,
            reasoning_tokens=self.split.reasoning_tokens,
            time_to_first_answer_token=self._first_answer,
        )
        split = self.split
        problem = reply_problem(
            split.answer,
            split.reasoning,
            stats,
            structured=self._structured,
            # A reply cut inside a Harmony header stopped before its answer too.
            in_reasoning=split.in_reasoning or split.in_header,
            reasoned=split.reasoned,
        )
        done = Completion(split.answer, stats.stop_reason, split.reasoning, stats)
        if problem is not None:
            # The reply with no answer is one the call spent too (found by a probe: left out
            # of a failed parse's replies, with its tokens); `parse` puts the earlier ones first.
            problem.replies = (as_reply(done, self._plan.render),)
            raise problem
        return done


def predict(
    call: Call, sink: Sink, errors: ErrorFactory, clock: Callable[[], float] = time.monotonic
) -> Flow[Completion]:
    """One prediction: upload, resolve, predict, read; retried after a drop or an unload.

    A lost socket makes the client reconnect (the next call finds it working); a model the
    server no longer has (not found when its traits are asked or the prediction opens, or
    unloaded while it answered: ``modelUnloaded``) is resolved again. Either way the request
    is sent once more, but only while the caller has seen nothing of the reply: once for
    each of the two (an LM Studio restarted with the model not loaded yet is both: the old
    socket is gone, then the cached handle names a model the new server has not loaded).
    Images and grammar mode are checked against the model's cached traits; a call is refused
    only on traits LM Studio gave after the call was made (`Request.made`), and a reply from
    another model than they are of (another model loaded under the identifier) replaces
    them. Each fragment goes through a `ReasoningSplitter`: the sink sees the answer apart
    from the reasoning, and a reply whose budget ran out inside the reasoning, or that has
    no answer after it, raises.

    Parameters
    ----------
    call
        The call's state; its `Call.reader` and `Call.finished` tell the driver what to
        cancel if the caller leaves early.
    sink
        What the caller gets of the answer.
    errors
        Builds our error for an SDK error (host, model, hint).
    clock
        Seconds, for the time to the first answer token and when a reply's traits were
        asked (`NoteTraits.at`): the front's clock, as `Request.made` reads it (no I/O).

    Returns
    -------
    Completion
        The answer, and why the model stopped.
    """
    request = call.request
    unloaded = False  # an attempt found the model gone (not found, or unloaded)
    dropped = False  # an attempt lost the connection
    stalled = False  # an attempt's SDK wait ran out in a stall of the process (`StalledWait`)
    kwargs = request.sdk_kwargs()
    held: list[Any] = []  # a whole reply's message, for the caller's on_message
    on_message: Callable[[Any], object] | None = None
    if request.args.callbacks:  # most calls have none: no copy on the hot path
        kwargs, on_message = _watched(sink, kwargs, held)
    for _attempt in (1, 2, 3, 4):  # each recovery once: at most one of each, then the last
        held.clear()
        sink.begin()
        call.reader = None  # no prediction of this attempt is open yet (none was cancelled)
        traits: ModelTraits | None = None
        stage: Stage = "resolve"
        checking = False  # asking the resolved model's traits (images, grammar mode)
        if (asked := failed_lookup(request, errors)) is not None:
            raise asked  # another item of the batch asked already: nothing is sent
        try:
            needs_traits = request.prompt.image_count or request.plan.kind == "grammar"
            if needs_traits and request.key and _attempt == 1:
                # A model that is not loaded is judged by its download, before it loads.
                download = yield Downloaded(call)
                refused = None if download is None else _refusal(request, download, request.key)
                if refused is not None:
                    raise refused
            handle = yield Resolve(call)
            if needs_traits:
                checking = True
                traits = yield ModelInfo(handle)
                if _refusal(request, traits, handle.identifier) is not None:
                    # The cached traits may be of a model the identifier named before
                    # (another model loaded under it since): refuse only on traits LM
                    # Studio gave after the call was made (a batch's items, made together,
                    # share one ask). Refusals are rare: the accepted call asks nothing more.
                    traits = yield ModelInfo(handle, since=request.made)
                    if (refused := _refusal(request, traits, handle.identifier)) is not None:
                        if not unloaded and (
                            yield from _swapped(request, handle, traits.model_key, record=False)
                        ):
                            unloaded = True  # the key's model is elsewhere: find it again
                            yield Forget(request.key, handle)
                            continue
                        raise refused
                checking = False
            stage = "upload"  # after the check: no upload for a model without vision
            handles = (yield Upload(call)) if request.prompt.images else {}
            stage = "predict"
            call.finished = False
            reply = _Reply(request, clock)
            chat = sdk_history(request.prompt, handles)
            yield Open(call, handle, chat, kwargs, sink.live)
            while (fragments := (yield Read(call))) is not None:
                restarts = reply.restarts
                chunks = reply.feed(fragments, call.reader.arrived)
                if sink.live:  # a sink that is not live gives nothing before the end
                    if reply.restarts != restarts:  # the answer so far was reasoning
                        sink.restart()
                    for chunk in chunks:
                        for item in sink.feed(chunk):
                            yield Emit(item)
                if call.reader.at_end:  # a whole read took the end too: no read is left
                    break
            call.finished = True
            chunks = reply.close()
            if sink.live:
                for chunk in chunks:
                    for item in sink.feed(chunk):
                        yield Emit(item)
        except OutlinesLMStudioError:
            raise  # ours (an lmstudio.LMStudioError too, see `errors`): already told
        except lms.LMStudioError as exc:
            call.finished = True
            again = not sink.emitted and not call.stopped
            if _dropped(exc):
                try:
                    yield Reconnect(call.generation)  # the retry (or the next call) finds it
                except OutlinesLMStudioError:
                    raise  # ours: already told
                except lms.LMStudioError as failed:  # say why the retry cannot be made, if
                    # there is one: else the lost reply's error stands (found by a probe: a
                    # shown stream's was replaced by the reconnection's "not reachable")
                    error = errors(failed, request.key, "connect")
                    if again and not dropped and isinstance(error, LMStudioConnectionError):
                        raise error from failed
                    raise errors(exc, request.key, stage) from exc
                if again and not dropped:
                    dropped = True
                    continue
            elif isinstance(exc, StalledWait):
                # LM Studio's reply may have come: nobody saw part of it, so it is asked
                # again, once (the prediction given up was cancelled).
                if again and not stalled:
                    stalled = True
                    continue
            elif (checking or stage == "predict") and isinstance(
                exc, lms.LMStudioModelNotFoundError
            ):
                # The cached handle's model was unloaded since it was resolved: not found when
                # the prediction opens, or when its traits are asked (images, grammar mode:
                # found by a probe, such a call failed where a text call resolved again).
                yield Forget(request.key, handle)
                if again and not unloaded:
                    unloaded = True
                    continue
                if again:  # the retry loaded it anew, and it was unloaded again (a probe)
                    unloaded_error = _unloaded_error(request, errors, shown=False, began=False)
                    raise with_details(unloaded_error, exc) from exc
            elif stage == "resolve":
                note_failed_lookup(request, exc)  # the batch's other items: the same error
                raise _resolve_error(exc, request.key, errors) from exc
            elif stage == "predict" and traits is not None and not (sink.emitted or call.stopped):
                # LM Studio refused what the cached traits let through: if the model behind
                # the identifier changed, say so as our check would have. Only while nothing
                # was shown and the caller is there (a review: a stream failing after its
                # text, or a caller gone, asked LM Studio again for nothing).
                try:
                    traits = yield ModelInfo(handle, since=request.made)
                except (lms.LMStudioError, OutlinesLMStudioError):
                    pass  # LM Studio's own error stands
                else:
                    refused = _refusal(request, traits, handle.identifier, sent=True)
                    if refused is not None:
                        if not unloaded and (
                            yield from _swapped(request, handle, traits.model_key, record=False)
                        ):
                            unloaded = True  # the key's model is elsewhere: find it again
                            yield Forget(request.key, handle)
                            continue
                        raise refused from exc
            raise errors(exc, request.key, stage) from exc
        except (msgspec.ValidationError, Unreadable) as exc:  # see `Unreadable`
            raise errors(exc, request.key, stage) from (exc.__cause__ or exc)
        result = call.reader.result()
        reason = stop_reason(result.stats)
        why = _CUT_SHORT.get(reason or "")
        if why is not None:
            if call.stopped:  # the caller left: its own cancel ended the reply
                raise Left("the prediction was stopped when its caller left")
            if reason == "modelUnloaded":  # the model is gone, as for a not-found model
                yield Forget(request.key, handle)
                if not unloaded and not sink.emitted:
                    unloaded = True
                    if request.key is None:
                        # Asked again of the same model (loaded anew), as a named one is:
                        # "any loaded model" gave the rest of the call to another one, whose
                        # reply came back as this one's (found by a probe).
                        key = result.model_info.model_key  # a whole result: it has a reason
                        call.request = request = msgspec.structs.replace(request, key=key)
                    continue
                raise _unloaded_error(request, errors, shown=sink.emitted)
            cut = f"the reply ended before the model finished it: {why}"
            raise errors(lms.LMStudioServerError(cut), request.key, "predict")
        # None for a reply the SDK could not read at its end (`UnreadResult`): which model
        # answered is unknown, and is not checked (found by a review: it raised
        # AttributeError for a model named by its path).
        info = result.model_info
        if (
            info is not None
            and request.key not in (None, handle.identifier)
            and (yield from _swapped(request, handle, info.model_key))
        ):
            yield Forget(request.key, handle)
            if not unloaded and not sink.emitted and not call.stopped:
                unloaded = True  # asked again of the key's own model
                continue
            raise _swapped_error(request, handle.identifier, info.model_key, errors, sink.emitted)
        if traits is not None and info is not None and info.model_key != traits.model_key:
            # Another model answered than the traits are of (loaded under the identifier
            # since): the next call checks against its traits (an attribute compare).
            yield NoteTraits(handle.identifier, ModelTraits.of(info), reply.started)
        done = reply.finish(result, reason, handle.identifier)
        call.done = done
        if on_message is not None and held:
            on_message(held[-1])  # the reply returned, and it alone
        try:
            finished = sink.finish(done)
        except ParseError as error:  # `parse_stream`'s reply: kept, as `parse` keeps its own
            # Found by a probe: its replies were empty, and the tokens it spent lost.
            error.replies = error.replies or (as_reply(done, request.plan.render),)
            raise
        for item in finished:
            yield Emit(item)
        return done
    raise AssertionError("unreachable: the third attempt returns or raises")  # pragma: no cover


def _watched(
    sink: Sink, kwargs: dict[str, Any], held: list[Any]
) -> tuple[dict[str, Any], Callable[[Any], object] | None]:
    """Return the SDK keywords with the caller's callbacks noting what they see.

    A callback that sees fragments as they come shows the reply as a stream does: once it
    has (`Sink.emitted`), the call is not asked again (found by a probe: a whole call asked
    again after a dropped socket gave ``on_prediction_fragment`` the reply twice, and
    called ``on_first_token`` twice).

    ``on_message`` is not given to the SDK: the message of each attempt goes to ``held``,
    and the caller's ``on_message`` (returned) gets the one of the reply returned, once it
    is, from the flow (found by reviews: a reply cut by an unload, or another model's, went
    to it, then the one asked again, and ``on_message=chat.append`` raised on the second;
    the SDK calls it unguarded, so what it raised came out of the prediction, and an
    ``lmstudio`` error of the caller's own was reported as LM Studio failing it). A stream
    left early gets none, as with the SDK.
    """
    watched = dict(kwargs)
    if (first := kwargs.get("on_first_token")) is not None:

        def on_first_token() -> None:
            sink.emitted = True
            first()

        watched["on_first_token"] = on_first_token
    if (fragment := kwargs.get("on_prediction_fragment")) is not None:

        def on_prediction_fragment(piece: Any) -> None:
            sink.emitted = True
            fragment(piece)

        watched["on_prediction_fragment"] = on_prediction_fragment
    message = kwargs.get("on_message")
    if message is not None:
        watched["on_message"] = held.append
    return watched, message


def _swapped(request: Request, handle: Any, model_key: str, *, record: bool = True) -> Flow[bool]:
    """Whether the instance a model key resolved to now holds another model (`Answered`).

    Only for a call that named a model other than by the instance's identifier: a call
    naming ``main`` asks for whatever ``main`` is, and a call naming no model for any.
    """
    if request.key is None or request.key == handle.identifier:
        return False
    first: str | None = yield Answered(handle, model_key, record)
    return first is not None and first != model_key


def _swapped_error(
    request: Request, identifier: str, model_key: str, errors: ErrorFactory, shown: bool
) -> BaseException:
    """Our error for a reply another model gave, once shown or already asked again."""
    why = (
        "part of the reply had been given out, so the call was not asked again"
        if shown
        else "it was so again after the call was asked again with the model looked up anew"
    )
    what = (
        f"the reply came from {model_key!r}: the instance {identifier!r} that "
        f"{request.key!r} was found at holds another model since (loaded under that "
        f"identifier); {why}"
    )
    return _failed_prediction(
        request, errors, what, "Call again: the next call looks the model up anew."
    )


def reply(request: Request) -> Flow[Reply]:
    """Complete a request; return its answer (as ``generate`` gives it), reasoning and stats."""
    done: Completion = yield Complete(request)
    return as_reply(done, request.plan.render)


def generate(request: Request) -> Flow[str]:
    """Complete a request; return its text rendered for the output type (``pos``, ``42``)."""
    return rendered(request, (yield Complete(request)))


def rendered(request: Request, done: Completion) -> str:
    """Return a completed request's text rendered for its output type (``pos``, ``42``)."""
    return request.plan.render(done.text)


def checked(request: Request, validator: Validator) -> Callable[[Completion], Any]:
    """Return what gives the value of a reply that may not be asked again (or raises)."""
    from outlines_lmstudio._typed import check_reply  # typed results only (import time)

    stops = request.args.stop_strings()

    def value(done: Completion) -> Any:
        try:
            return check_reply(validator, done.text, done.stop_reason, 1, True, stops)[1]
        except ParseError as error:
            # Found by a probe: the one-step path left them out, as `parse` once did.
            error.replies = _replies([done], request)
            raise

    return value


def parse_reply(request: Request, retries: int, validator: Validator) -> Flow[Parsed[Any]]:
    """`parse`, returning the value with the accepted reply and the rejected ones."""
    done: list[Completion] = []
    value = yield from parse(request, retries, validator, done)
    replies = _replies(done, request)
    return Parsed(value, replies[-1], replies[:-1])


def parse(
    request: Request, retries: int, validator: Validator, done: list[Completion] | None = None
) -> Flow[Any]:
    """Complete, validate, and re-ask with the errors until the reply validates or retries end.

    The call's time limit (``timeout=``) covers every attempt: it is read once, at the start.

    Parameters
    ----------
    request
        The checked request.
    retries
        How many times to re-ask after an invalid reply.
    validator
        The output type's validator (made by the caller, to refuse a type that cannot be
        checked at the call, before any flow runs), with the call's ``context=``.
    done
        Where each attempt's completed reply goes, in order (for `parse_reply`). A
        `ParseError` gets them as its ``replies`` either way.

    Returns
    -------
    Any
        The value of the output type.
    """
    from outlines_lmstudio._typed import (  # typed results only (import time)
        check_reply,
        invalid_reply,
        reask_prompt,
    )

    # The limit is on the whole call: read once for several attempts (one gets it anyway).
    deadline: float | None = (yield Deadline(request)) if retries else None
    stops = request.args.stop_strings()
    last: ParseError | None = None  # the previous reply, which did not validate
    done = [] if done is None else done
    request, held, on_message = _holding_message(request)
    for attempt in range(1, retries + 2):
        held.clear()
        try:
            completed: Completion = yield Complete(request, deadline)
        except ParseError as error:  # a reasoning reply with no answer: never re-asked
            error.attempts = attempt
            error.replies = _replies(done, request) + error.replies  # its own reply last
            raise
        except SERVER_ERRORS as error:
            if last is not None:
                _failed_asking_again(error, last, _replies(done, request))
            raise
        done.append(completed)
        try:
            ok, value, problems = check_reply(
                validator, completed.text, completed.stop_reason, attempt, attempt > retries, stops
            )
        except ParseError as error:
            # Found by a probe: a failed call's replies, and what they spent, were lost;
            # instructor's exception carries its attempts' usage.
            error.replies = _replies(done, request)
            raise
        if ok:
            if on_message is not None and held:
                on_message(held[-1])  # the accepted reply's message, and it alone
            return value
        last = invalid_reply(validator, completed.text, completed.stop_reason, problems, attempt)
        request = msgspec.structs.replace(
            request, prompt=reask_prompt(request.prompt, completed.text, problems)
        )
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


def _replies(done: list[Completion], request: Request) -> tuple[Reply, ...]:
    """Make the `Reply` of each completed attempt, in order (a `ParseError`'s ``replies``)."""
    return tuple(as_reply(each, request.plan.render) for each in done)


def _holding_message(
    request: Request,
) -> tuple[Request, list[Any], Callable[[Any], object] | None]:
    """Hold back the caller's ``on_message`` until a reply validates.

    Given each attempt's reply, ``on_message=chat.append`` (the SDK's own pattern) added the
    rejected ones to the caller's chat; the re-ask then read the chat with them, and the
    accepted reply, a second assistant message in a row, made ``Chat.append`` raise: the
    value was lost (found by a probe). The SDK's message of each attempt is kept instead;
    the accepted one is given to ``on_message`` once the reply has validated.

    Returns
    -------
    tuple
        The request to send, the list the SDK's messages go to, and the caller's
        ``on_message`` (``None`` if none was given).
    """
    callbacks = request.args.callbacks
    theirs = callbacks.get("on_message")
    held: list[Any] = []
    if theirs is None:
        return request, held, None
    return request.with_callbacks({**callbacks, "on_message": held.append}), held, theirs


_ServerErrors: TypeAlias = (  # SERVER_ERRORS, for the type checker
    LMStudioTimeoutError
    | LMStudioPredictionError
    | LMStudioConnectionError
    | LMStudioModelNotFoundError
)


def _failed_asking_again(
    error: _ServerErrors, last: ParseError, replies: tuple[Reply, ...]
) -> None:
    """Make an error met while re-asking say so, with the last invalid reply as context.

    A timeout alone said "check the server" and kept nothing of the replies that had come
    back whole and invalid (found by a probe); a re-ask that no longer fit the model's
    context (it holds the invalid reply and its errors) blamed a prompt the caller never
    wrote, and lost the replies too (found by a probe of the real engine). The last invalid
    reply becomes the error's ``__context__``, with every attempt's reply as its ``replies``.
    The error is changed in place and raised again as it is: a new one raised here would get
    the failure as its context instead.
    """
    last.replies = replies
    said = "the reply" if last.attempts == 1 else f"the {last.attempts} replies"
    found = "; ".join(last.errors[:3]) or "it did not validate"
    hint = error.hint  # LM Studio's own failure: its advice stands
    context = (
        "The replies are what failed: the last one is this error's __context__ (a ParseError "
        "with .raw, .errors and .replies)."
    )
    if error.message.startswith(DEADLINE_PASSED):  # the call's timeout=, spent on re-asks
        hint = f"{context} Pass a larger timeout=, or fewer retries=."
    elif "context length" in error.message:
        hint = (
            f"{context} Each re-ask sends the invalid reply and its errors after the prompt: "
            "load the model with a larger context length, or pass fewer retries=."
        )
    how = "ran out" if isinstance(error, LMStudioTimeoutError) else "failed"
    # LM Studio's own message may end without a full stop (found by a review).
    told = error.message if error.message.endswith((".", "!", "?")) else f"{error.message}."
    type(error).__init__(
        error,
        f"{told} It {how} asking again: {said} before did not validate (the last: {found:.300}).",
        host=error.host,
        model=error.model,
        hint=hint,
    )
    error.__context__ = last
    error.__suppress_context__ = False


def wait_limit(deadline: float | None, idle: float | None, now: float) -> tuple[float | None, bool]:
    """How long the next wait may last: ``(seconds or None, whether the call's limit is it)``.

    Parameters
    ----------
    deadline
        When the whole call runs out of time (a clock reading), or ``None``.
    idle
        The longest wait for any message (``read_timeout``), or ``None``.
    now
        The clock reading now.

    Returns
    -------
    tuple
        The shorter of the two bounds, and ``True`` when it is the call's own limit.
    """
    if deadline is None:
        return idle, False
    remaining = max(deadline - now, 0.0)
    if idle is None or remaining <= idle:
        return remaining, True
    return idle, False


def batch_result(results: Sequence[Any]) -> list[Any]:
    """Assemble a batch's results in input order; raise with the others if any item failed.

    Parameters
    ----------
    results
        One result or exception per input, in input order.

    Returns
    -------
    list
        The results.

    Raises
    ------
    BatchGenerationError
        If an item failed; it holds the other results and each error by index.
    """
    errors = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
    if errors:
        raise BatchGenerationError(
            [None if isinstance(r, BaseException) else r for r in results], errors
        )
    return list(results)
