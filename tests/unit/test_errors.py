import asyncio
import copy
import gc
import pickle
import warnings
from typing import Any

import lmstudio as lms
import pytest
from lmstudio._ws_impl import AsyncTaskManager
from outlines.inputs import Chat
from outlines.models.lmstudio import LMStudioTypeAdapter as OutlinesAdapter

import outlines_lmstudio
from outlines_lmstudio import errors
from outlines_lmstudio._adapter import LMStudioTypeAdapter
from outlines_lmstudio._sdk_errors import (
    closed_client_error,
    release_unsent,
    translate_sdk_error,
    unreadable,
)


def test_package_exports_a_sorted_explicit_all() -> None:
    assert outlines_lmstudio.__all__ == sorted(outlines_lmstudio.__all__)
    assert {"Reply", "ReplyChunk", "ReplyStats"} <= set(outlines_lmstudio.__all__)
    for name in outlines_lmstudio.__all__:
        assert hasattr(outlines_lmstudio, name)
    assert errors.__all__ == sorted(errors.__all__)


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.UnsupportedInputError, TypeError),
        (errors.UnsupportedInputError, ValueError),
        (errors.UnsupportedOutputTypeError, TypeError),
        (errors.InvalidInferenceArgumentError, TypeError),
        (errors.InvalidInferenceValueError, ValueError),
        (errors.InvalidPromptError, ValueError),
        (errors.InvalidSchemaError, ValueError),
        (errors.UnsupportedGrammarError, ValueError),
        (errors.InvalidImageError, ValueError),
        (errors.LMStudioConnectionError, ConnectionError),
        (errors.LMStudioModelNotFoundError, LookupError),
        (errors.LMStudioTimeoutError, TimeoutError),
        (errors.LMStudioPredictionError, RuntimeError),
        (errors.BatchGenerationError, RuntimeError),
    ],
)
def test_every_error_is_ours_and_a_builtin(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, errors.OutlinesLMStudioError)
    assert issubclass(cls, builtin)


def test_server_errors_carry_host_model_and_hint() -> None:
    exc = errors.LMStudioConnectionError("gone", host="h:1", model="m", hint="start it")
    assert (exc.host, exc.model, exc.hint) == ("h:1", "m", "start it")
    assert str(exc) == "gone (host='h:1', model='m') Hint: start it"


@pytest.mark.parametrize(
    ("sdk_error", "stage", "ours"),
    [
        (lms.LMStudioTimeoutError("slow"), "predict", errors.LMStudioTimeoutError),
        (lms.LMStudioWebsocketError("socket closed"), "predict", errors.LMStudioConnectionError),
        (
            lms.LMStudioClientError("LM Studio is not reachable at x"),
            "connect",
            errors.LMStudioConnectionError,
        ),
        (lms.LMStudioModelNotFoundError("no", {}), "predict", errors.LMStudioModelNotFoundError),
        (
            lms.LMStudioServerError("Model get/load error: nope", {}),
            "resolve",
            errors.LMStudioModelNotFoundError,
        ),
        (
            lms.LMStudioServerError("Chat response error: crash", {}),
            "predict",
            errors.LMStudioPredictionError,
        ),
        (lms.LMStudioPresetNotFoundError("preset", {}), "predict", errors.LMStudioPredictionError),
        (lms.LMStudioServerError("bad file", {}), "upload", errors.LMStudioPredictionError),
    ],
)
def test_sdk_errors_translate(sdk_error: Exception, stage: str, ours: type[Exception]) -> None:
    translated = translate_sdk_error(sdk_error, host="127.0.0.1:1", model="m", stage=stage)  # type: ignore[arg-type]
    assert type(translated) is ours
    assert isinstance(translated, errors.OutlinesLMStudioError)
    assert "host='127.0.0.1:1'" in str(translated)


@pytest.mark.parametrize(
    ("ours", "sdk"),
    [
        (errors.LMStudioConnectionError, lms.LMStudioWebsocketError),
        (errors.LMStudioModelNotFoundError, lms.LMStudioModelNotFoundError),
        (errors.LMStudioTimeoutError, lms.LMStudioTimeoutError),
        (errors.LMStudioPredictionError, lms.LMStudioPredictionError),
    ],
)
def test_server_errors_are_the_sdks_errors_of_their_meaning(
    ours: type[errors.OutlinesLMStudioError], sdk: type[Exception]
) -> None:
    """Outlines' own model lets the SDK's errors through: ``except`` clauses written for
    them (``lms.LMStudioError``, ``lms.LMStudioServerError``...) catch ours (a probe)."""
    error: Any = ours("gone", host="h:1", model="m", hint="try")  # type: ignore[call-arg]
    assert isinstance(error, sdk)
    assert isinstance(error, lms.LMStudioError)
    assert str(error) == "gone (host='h:1', model='m') Hint: try"
    assert error.args == ("gone (host='h:1', model='m') Hint: try",)
    if isinstance(error, lms.LMStudioServerError):
        assert error.server_error is None  # LM Studio sent no details for this one


def test_a_translated_error_keeps_lm_studios_details_and_the_sdks_class() -> None:
    details = {
        "title": 'Cannot find a model with path "q"',
        "displayData": {"code": "generic.pathNotFound", "availablePathsSample": []},
    }
    sdk = lms.LMStudioServerError.from_details("Model get/load error", details)
    error = translate_sdk_error(sdk, host="h:1", model="q", stage="resolve")
    assert isinstance(error, errors.LMStudioModelNotFoundError)
    assert isinstance(error, lms.LMStudioServerError)
    assert error.server_error is sdk.server_error is not None
    preset = lms.LMStudioServerError.from_details(
        "Chat response error",
        {"title": "No preset", "displayData": {"code": "generic.presetNotFound"}},
    )
    assert type(preset) is lms.LMStudioPresetNotFoundError
    error = translate_sdk_error(preset, host="h:1", model="q", stage="predict")
    assert type(error) is errors.LMStudioPredictionError  # named as before (a review)
    assert isinstance(error, lms.LMStudioServerError)
    assert error.server_error is preset.server_error is not None


def test_a_chat_template_refusal_gets_a_hint_about_the_messages() -> None:
    """Not "images need a vision model": images are checked before the request is sent."""
    refused = lms.LMStudioServerError(
        "Error rendering prompt with jinja template: Conversation roles must alternate "
        "user/assistant/user/assistant/...",
        {},
    )
    translated = translate_sdk_error(refused, host=None, model="gemma", stage="predict")
    assert isinstance(translated, errors.LMStudioPredictionError)
    assert "in turn" in str(translated)
    assert "vision" not in str(translated)


def test_a_broken_chat_template_is_not_blamed_on_the_order_of_the_messages() -> None:
    """Found by a probe: a template with a syntax error got "Reorder or merge the
    messages", which no order of messages can fix."""
    broken = lms.LMStudioServerError(
        "Chat response error: Error rendering prompt with jinja template: unexpected '}'", {}
    )
    translated = str(translate_sdk_error(broken, host=None, model="m", stage="predict"))
    assert "in turn" not in translated
    assert "if the template itself is broken (a syntax error), fix the model's prompt " in (
        translated
    )
    roles = lms.LMStudioServerError("Error: System role not supported", {})
    assert "in turn" in str(translate_sdk_error(roles, host=None, model="m", stage="predict"))


@pytest.mark.parametrize("stage", ["predict", "resolve"])
def test_a_huge_server_error_text_is_quoted_in_part(stage: str) -> None:
    """A 1 MB title from LM Studio made a 1 MB message and log line; a 1 MB model name
    came back three times (found by a probe)."""
    name = "S" * 1_000_000
    sdk = lms.LMStudioServerError(f"Chat response error: {name}", {})
    translated = translate_sdk_error(sdk, host="h:1", model=name, stage=stage)  # type: ignore[arg-type]
    assert translated is not None
    assert len(str(translated)) < 3_000
    assert "characters cut" in str(translated)
    assert translated.__class__ is (
        errors.LMStudioPredictionError if stage == "predict" else errors.LMStudioModelNotFoundError
    )


def test_non_sdk_errors_are_not_translated() -> None:
    assert translate_sdk_error(KeyError("x"), host=None, model=None, stage="predict") is None


def test_batch_error_keeps_results() -> None:
    exc = errors.BatchGenerationError(["a", None, "c"], {1: ValueError("boom")})
    assert exc.results == ["a", None, "c"]
    assert isinstance(exc.errors[1], ValueError)
    assert "1 of 3" in str(exc)
    assert "item 1" in str(exc)


def test_batch_error_message_has_one_full_stop_after_the_item() -> None:
    """Found by a probe: "...or check the server.. The other results"."""
    exc = errors.BatchGenerationError([None, "b"], {0: ValueError("Check the server.")})
    assert "Check the server. The other results" in str(exc)


def test_batch_error_message_lists_ten_indexes_at_most() -> None:
    """Found by a probe: a batch of 1000 listed every index (5,000 characters)."""
    results = ["ok"] + [None] * 999
    exc = errors.BatchGenerationError(results, {i: ValueError(f"e{i}") for i in range(1, 1000)})
    listed = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... and 989 more]"
    assert f"999 of 1000 batch items failed (indexes {listed}); " in str(exc)
    assert "first, item 1: ValueError: e1. The other results are in .results" in str(exc)
    assert len(str(exc)) < 200


def test_a_batch_error_of_all_items_claims_no_other_results() -> None:
    """Found by a probe: every item failed (a closed client) and it said "The other results are
    in .results", though there were none."""
    same = errors.BatchGenerationError(
        [None] * 1000, {i: ValueError("closed.") for i in range(1000)}
    )
    assert str(same) == (
        "All 1000 batch items failed, each with the same error: ValueError: closed. "
        "Each item's error is in .errors; there are no results."
    )
    mixed = errors.BatchGenerationError([None] * 2, {0: ValueError("a"), 1: KeyError("b")})
    assert str(mixed) == (
        "All 2 batch items failed; first, item 0: ValueError: a. "
        "Each item's error is in .errors; there are no results."
    )


def test_parse_error_message_says_how_many_errors_it_leaves_out() -> None:
    exc = errors.ParseError("bad", raw="{}", errors=[f"e{i}" for i in range(8)])
    assert "e0; e1; e2; e3; e4; and 3 more. Raw reply" in str(exc)


@pytest.mark.parametrize(
    "error",
    [
        errors.ParseError("bad", raw="{", errors=["(root): x"], stop_reason="eosFound", attempts=2),
        errors.TruncatedOutputError(
            "cut", raw="1", errors=["e"], stop_reason="contextLengthReached"
        ),
        errors.ReasoningTruncatedError(
            "spent", raw="", errors=[], reasoning="hm", reasoning_tokens=3, predicted_tokens=4
        ),
        errors.EmptyAnswerError("empty", raw="", errors=[], reasoning="hm", predicted_tokens=9),
        errors.BatchGenerationError(["a", None], {1: ValueError("boom")}),
        errors.LMStudioTimeoutError("slow", host="h:1", model="m", hint="wait"),
        errors.LMStudioConnectionError("gone", host="h:1"),
        errors.LMStudioModelNotFoundError("none", model="m"),
        errors.InvalidSchemaError("no"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_pickle_and_copy_with_their_attributes(error: Exception) -> None:
    """A process pool or task queue pickles the error; ParseError's family could not be."""
    error.add_note("(in batch item 1)")
    for again in (
        pickle.loads(pickle.dumps(error)),
        copy.copy(error),
        copy.deepcopy(error),
    ):
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert again.args == error.args
        assert again.__notes__ == ["(in batch item 1)"]
        if isinstance(error, errors.BatchGenerationError):
            assert isinstance(again, errors.BatchGenerationError)
            assert again.results == ["a", None]
            assert repr(again.errors) == repr(error.errors)
        else:
            assert vars(again) == vars(error)


@pytest.mark.parametrize(
    "model_input",
    [
        ["Describe", "photo.jpg"],  # Outlines: ValueError (assets must be Images)
        Chat([{"role": "robot", "content": "x"}]),  # ValueError (unsupported role)
        Chat([{"role": "user", "content": 5}]),  # ValueError (invalid content type)
        5,  # TypeError (input type not available)
    ],
    ids=["file name in a list", "unknown role", "int content", "int input"],
)
def test_bad_input_is_caught_as_outlines_own_model_raises_it(model_input: object) -> None:
    """Code written for Outlines' own model (``except ValueError``) catches our error too."""
    with pytest.raises((TypeError, ValueError)) as theirs:
        OutlinesAdapter().format_input(model_input)
    with pytest.raises(errors.OutlinesLMStudioError) as ours:
        LMStudioTypeAdapter().format_input(model_input)
    assert isinstance(ours.value, type(theirs.value)), (type(theirs.value), type(ours.value))


def test_release_unsent_closes_the_coroutine_a_closed_sdk_client_made() -> None:
    """A closed sync client's reader builds ``Queue.get()`` and only then finds no loop.

    The SDK's task manager raises with the coroutine in its traceback; released (found
    through the error chain), it no longer warns "never awaited" when it is freed.
    """

    def read_from_closed_client() -> RuntimeError:
        queue: asyncio.Queue[object] = asyncio.Queue()
        try:
            AsyncTaskManager().run_coroutine_threadsafe(queue.get())  # what the SDK does
        except RuntimeError as exc:
            return exc
        raise AssertionError("an inactive task manager ran a coroutine")

    for release, warned in ((False, 1), (True, 0)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            error = read_from_closed_client()
            if release:
                ours = RuntimeError("the error the caller sees")
                ours.__cause__ = error
                release_unsent(ours)  # found through the chain
            del error
            gc.collect()
        assert sum("never awaited" in str(w.message) for w in caught) == warned


_NOT_FOUND_DETAILS = {
    "a list of models": (
        {
            "title": 'Cannot find a model with path "q"',
            "displayData": {
                "code": "generic.pathNotFound",
                "path": "q",
                "availablePathsSample": ["a/b.gguf", "c/d.gguf", "e/f.gguf", "g/h.gguf"],
                "totalModels": 9,
            },
        },
        'Cannot find a model with path "q"; LM Studio has a/b.gguf, c/d.gguf, e/f.gguf (9 in all).',
    ),
    "a title with its own full stop, and a cause": (
        {
            "title": "No loaded model satisfies all requirements specified in the query.",
            "cause": "Query 'mine'",
            "displayData": {
                "code": "generic.noModelMatchingQuery",
                "loadedModelsSample": ["x"],
                "totalLoadedModels": 1,
            },
        },
        "No loaded model satisfies all requirements specified in the query (Query 'mine'); "
        "LM Studio has x.",
    ),
}


@pytest.mark.parametrize("case", list(_NOT_FOUND_DETAILS))
def test_a_not_found_with_models_listed_is_one_sentence(case: str) -> None:
    """The SDK's text held the displayData as JSON (1,137 characters; found by a probe)."""
    details, said = _NOT_FOUND_DETAILS[case]
    sdk = lms.LMStudioServerError.from_details("Model get/load error", details)
    error = translate_sdk_error(sdk, host="h:1", model="q", stage="resolve")
    assert isinstance(error, errors.LMStudioModelNotFoundError)
    assert error.message == f"LM Studio has no model matching 'q': {said}"


@pytest.mark.parametrize(
    "details",
    [
        {  # no model to list: the suggestion is all the help there is
            "title": 'Cannot find a model with path "q"',
            "suggestion": "Download a model first",
            "displayData": {"code": "generic.pathNotFound", "availablePathsSample": []},
        },
        {  # another error met while resolving: its cause and suggestion stay
            "title": "Failed to load the model",
            "cause": "The runtime does not support architecture qwen3",
            "suggestion": "Update the runtime",
            "displayData": {"code": "generic.engineDoesNotSupportFeature", "feature": "qwen3"},
        },
    ],
)
def test_a_not_found_without_models_keeps_the_sdks_text(details: dict[str, object]) -> None:
    """Found by a review: only the title was kept, and the cause and suggestion lost."""
    sdk = lms.LMStudioServerError.from_details("Model get/load error", details)
    error = translate_sdk_error(sdk, host="h:1", model="q", stage="resolve")
    assert isinstance(error, errors.LMStudioModelNotFoundError)
    for part in ("suggestion", "cause"):
        if part in details:
            assert str(details[part]) in error.message


def test_what_the_sdk_cannot_read_is_said_as_such_and_nothing_of_ours_is() -> None:
    """Found by mutation testing: nothing held the reader's wrapping to the SDK's errors
    (ours are ValueErrors and TypeErrors too), nor the warning a newer LM Studio's message
    raises, nor their translation."""
    assert unreadable(errors.InvalidSchemaError("ours")) is None
    assert unreadable(RuntimeError("not a reading error")) is None
    for sdk in (KeyError("reasoningType"), lms.LMStudioUnknownMessageWarning("new message")):
        wrapped = unreadable(sdk)
        assert wrapped is not None
        assert wrapped.__cause__ is sdk
        error = translate_sdk_error(wrapped, host="h:1", model="q", stage="predict")
        assert isinstance(error, errors.LMStudioPredictionError)
        assert error.message.startswith(
            f"The lmstudio SDK {lms.__version__} cannot read a message LM Studio sent "
            "(during the prediction): "
        )
        assert type(sdk).__name__ in error.message
        assert "A newer LM Studio may send" in str(error)


def test_lm_studios_unknown_draft_model_is_said_as_such() -> None:
    """LM Studio's words for a draft model it does not have, with no display data the library
    knew (lmstudio-js's own test of speculative decoding, found by a probe running it): they
    were told as a prediction LM Studio failed, with a hint about the chat template."""
    details = {"title": 'Cannot find model "tiny-draft"'}
    sdk = lms.LMStudioServerError.from_details("Chat response error", details)
    error = translate_sdk_error(sdk, host="h:1", model="q", stage="predict")
    assert isinstance(error, errors.LMStudioPredictionError)
    assert error.message == (
        "LM Studio has no draft model matching config['draftModel']: "
        'Cannot find model "tiny-draft"'
    )
    assert "config['draftModel'] the key of a downloaded model" in str(error)
    # The same words for the main model are not the draft model's (a review).
    error = translate_sdk_error(sdk, host="h:1", model="tiny-draft", stage="predict")
    assert error is not None
    assert "draftModel" not in str(error)


def test_a_client_closed_at_the_programs_exit_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a probe: a daemon thread's call at the program's exit was told its client
    was closed by "close(), aclose(), or the end of its with block", which it never called.
    A non-daemon thread outliving the main one keeps the first message (a review: its own
    ``with`` block closed the client; the program closes nothing while it runs)."""
    import threading

    def closed_in(daemon: bool) -> errors.LMStudioConnectionError:
        made: list[errors.LMStudioConnectionError] = []
        thread = threading.Thread(
            target=lambda: made.append(closed_client_error("127.0.0.1:1234", "m")), daemon=daemon
        )
        thread.start()
        thread.join(10)
        return made[0]

    assert "exiting" not in str(closed_in(daemon=True))  # the main thread runs
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    monkeypatch.setattr(threading, "main_thread", lambda: ended)  # as when the program exits
    error = closed_in(daemon=True)
    assert "the program is exiting (its main thread has ended)" in str(error)
    assert "join the thread" in str(error.hint)
    assert "exiting" not in str(closed_in(daemon=False))
    assert "Keep the client open" in str(closed_in(daemon=False).hint)


@pytest.mark.parametrize(
    ("overslept", "said"), [(0.34, "0.3 s"), (3.04, "3 s"), (10.2, "10.2 s"), (70.4, "70.4 s")]
)
def test_a_stalled_wait_says_how_long_at_least_in_the_library_and_the_command_line(
    overslept: float, said: str
) -> None:
    from outlines_lmstudio._silence import StalledWait
    from outlines_lmstudio.cli._common import error_message

    stalled = StalledWait(60.0, overslept, cancelled=True)
    translated = translate_sdk_error(stalled, host="h:1", model="q", stage="predict")
    assert isinstance(translated, errors.LMStudioTimeoutError)
    assert f"for at least {said} past the lmstudio SDK's 60 s limit" in str(translated)
    assert "a cancel of its prediction was sent" in str(translated)
    assert "LM Studio sent nothing" not in str(translated)  # it may have sent everything
    translated.__cause__ = stalled
    told = error_message(translated)
    assert told.startswith(f"The command was stopped or stalled (Ctrl-Z) for at least {said} ")
    assert told.endswith("may have come meanwhile. Run the command again.")
