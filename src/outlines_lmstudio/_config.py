"""Inference keyword arguments -> LM Studio prediction settings (pure, no I/O).

The SDK drops unknown keys of a prediction config silently, so every key is
checked here against the SDK's own config struct before anything is sent.

A setting has one checker, whichever way it is spelled: ``max_tokens=5``,
``config={"maxTokens": 5}``, ``config={"max_tokens": 5}`` and
``config=LlmPredictionConfig(max_tokens=5)`` all go through `SETTINGS`, so
``config=`` can never send what the keyword refuses.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import msgspec
from lmstudio import LlmLoadModelConfig, LlmPredictionConfig

from .errors import InvalidInferenceArgumentError, InvalidInferenceValueError, UnknownSettingError

__all__ = [
    "CALLBACK_KWARGS",
    "MAX_COUNT",
    "MAX_SECONDS",
    "NO_OUTPUT_TYPE",
    "SETTINGS",
    "SIMPLE_KWARGS",
    "PredictionArgs",
    "accepted_keywords",
    "check_flag",
    "check_seconds",
    "describe",
    "is_unknown_name",
    "missing_output_type",
    "named",
    "parse_inference_kwargs",
    "optional_name",
    "plain_str",
    "real_number",
    "shortened",
    "unknown_setting",
    "did_you_mean",
]

MAX_COUNT = 2**31 - 1
"""Largest token count LM Studio takes (its engines count tokens in 32-bit ints)."""
MAX_SECONDS = 1e9
"""Largest timeout we accept (about 31 years); larger ones overflow the OS's timers."""
DEFAULT_THINK_TAGS = ("<think>", "</think>")
"""Reasoning delimiters used when ``reasoning_parsing=True`` gives none."""

Checker = Callable[[str, object], object]


def plain_str(value: str) -> str:
    """Return ``value`` as an exact ``str`` (``markupsafe.Markup`` and other subclasses).

    The SDK encodes messages with msgspec, which refuses ``str`` subclasses after the
    socket is open; every string we pass on goes through this first.
    """
    return value if type(value) is str else str.__str__(value)


def shortened(text: str, most: int = 60) -> str:
    """Return ``text`` cut to ``most`` characters ("..." at its end), for a message.

    What a message quotes of the user's arguments is cut, so that a huge value given by
    mistake (a DataFrame as ``retries=``, a 100,000-character keyword) does not make a
    message (and a log line) as large (found by a probe).
    """
    return text if len(text) <= most else text[: most - 3] + "..."


def named(keys: list[str]) -> str:
    """Return the first ten of ``keys``, each `shortened`, and how many more, for a message."""
    more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
    return f"{[shortened(key) for key in keys[:10]]}{more}"


def describe(value: object, most: int = 60) -> str:
    """Return ``repr(value)``, `shortened` to ``most`` (and said when it cannot be made)."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4,300 digits: Python refuses to write it out
        return f"{type(value).__name__} too large to write out"
    return shortened(text, most)


def real_number(value: object) -> int | float | None:
    """Return a real number as a Python ``int`` or ``float``; ``None`` if it is not one.

    NumPy scalars (``np.int64(100)``, ``np.float32(0.5)``) and ``Fraction`` are real
    numbers too (``numbers.Integral`` / ``numbers.Real``); the SDK's msgspec encoder
    takes only Python's own, hence the conversion. Subclasses of ``int`` and ``float``
    (``np.float64`` is one, an ``IntEnum`` member another) are converted too: msgspec
    refuses ``np.float64``. A bool is not a number here.
    """
    if isinstance(value, bool):
        return None
    if type(value) is int or type(value) is float:  # the common case, returned as it is
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        try:
            return float(value)
        except OverflowError:  # Fraction(10**400): as large as the float it stands for
            return math.inf if value > 0 else -math.inf  # type: ignore[operator]  # typeshed
    return None


def _real(name: str, value: object, *, integer: bool = False) -> float:
    """Check a finite real number (an int when ``integer``); bools are refused."""
    kind = "an int" if integer else "a number"
    number = real_number(value)
    if number is None:
        raise InvalidInferenceArgumentError(
            f"{name} must be {kind}, got {type(value).__name__} {describe(value)}."
        )
    if integer and not isinstance(number, int):
        raise InvalidInferenceArgumentError(f"{name} must be an int, got {describe(value)}.")
    if isinstance(number, int):
        if abs(number) <= MAX_COUNT:
            return number
        if integer:  # a count: LM Studio's engines count in 32-bit ints
            raise InvalidInferenceValueError(
                f"{name} is out of range: {describe(value)} is "
                + (f"larger than {MAX_COUNT:,}." if number > 0 else f"below {-MAX_COUNT:,}.")
            )
        try:  # any other setting is a JSON number: a large int is the float it means
            number = float(number)
        except OverflowError:
            number = math.inf
    if not math.isfinite(number):
        raise InvalidInferenceValueError(f"{name} must be a finite number, got {describe(value)}.")
    return number


def is_unknown_name(owner: object, name: str) -> bool:
    """Whether assigning ``name`` to ``owner`` is refused: no setting of one of our classes.

    A public name that is no attribute of the class (its methods may be replaced, say by
    ``mock.patch.object``). A user's subclass keeps state of its own (``self.calls = 0``),
    as any Python class does (found by a review): only the package's own classes refuse.
    """
    cls = type(owner)
    return (
        name[:1] != "_"
        and not hasattr(cls, name)
        and cls.__module__.partition(".")[0] == "outlines_lmstudio"
    )


def did_you_mean(name: str, candidates: Iterable[str], suffix: str = "") -> str:
    """Return `` Did you mean x?`` for the closest of ``candidates`` to a name (or ``""``)."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" Did you mean {close[0]}{suffix}?" if close else ""


def unknown_setting(
    owner: object, name: str, settings: str, candidates: Sequence[str], hint: str | None = None
) -> UnknownSettingError:
    """Return the error of an assignment to ``name``, none of ``owner``'s ``settings``.

    ``hint``: what to say instead of the closest of ``candidates`` ("Did you mean ...?").
    """
    if hint is None:
        hint = did_you_mean(name, candidates)
    error = UnknownSettingError(
        f"{type(owner).__name__} has no setting {describe(name)}: its settings are "
        f"{settings}.{hint}"
    )
    error.name, error.obj = name, owner  # as Python's own AttributeError
    return error


def check_flag(name: str, value: object) -> bool:
    """Return an on/off option, refusing anything but a bool (``"no"`` is truthy)."""
    if not isinstance(value, bool):
        raise InvalidInferenceArgumentError(f"{name} must be True or False, got {describe(value)}.")
    return value


def _count(name: str, value: object) -> object:
    """Check a token count: an int from 1 to `MAX_COUNT`."""
    number = _real(name, value, integer=True)
    if number < 1:
        raise InvalidInferenceValueError(f"{name} must be at least 1, got {describe(value)}.")
    return int(number)


TOP_K_RANGE = (-1, 500)
"""LM Studio's range for ``topKSampling`` (lmstudio-js, ``lms-kv-config``'s schema:
``numeric, { min: -1, max: 500, int: true }``); 0 and -1 turn top-k off, as in llama.cpp."""


def _top_k(name: str, value: object) -> object:
    """``topKSampling``: a whole number from -1 to 500 (0 or -1: off).

    A whole float is taken as the int it is: the SDK types the key as a float, and gives
    back ``20.0`` in a prediction's config (found by a probe: passing that config back was
    refused).
    """
    low, high = TOP_K_RANGE
    exact = real_number(value)
    # An int beyond a float's range: the range, not "finite" (found by a review: 10**400)
    number = exact if isinstance(exact, int) else _real(name, value)
    if isinstance(number, float) and not number.is_integer():
        raise InvalidInferenceValueError(f"{name} must be a whole number, got {describe(value)}.")
    if not low <= number <= high:
        raise InvalidInferenceValueError(
            f"{name} must be between {low} and {high} (LM Studio's range; 0 or -1 turns top-k "
            f"off), got {describe(value)}."
        )
    return int(number)


def _max_tokens(name: str, value: object) -> object:
    """``maxTokens``: a count, or ``False`` (the SDK's "no limit").

    -1 is "no limit" too, in LM Studio's own schema (lmstudio-js's ``maxTokens``: an int
    from -1, or false) as in llama.cpp's: it is sent as ``False``, the SDK's form. It was
    refused, saying that -1 meant no limit only in other APIs (found by a probe of the
    real engine's settings: the SDK by hand sends it, and LM Studio takes it).
    """
    number = real_number(value)
    if value is False or (type(number) is int and number == -1):  # np.int64(-1) too
        return False
    return _count(name, value)


def _ranged(
    low: float, high: float | None, *, low_open: bool = False, off: bool = False
) -> Checker:
    """Make a checker of a number in ``[low, high]`` (``low`` excluded if ``low_open``)."""

    def check(name: str, value: object) -> object:
        if off and value is False:
            return False
        number = _real(name, value)
        too_low = number <= low if low_open else number < low
        if too_low or (high is not None and number > high):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            wanted = f"between {low:g} and {high:g}" if high is not None else bound
            raise InvalidInferenceValueError(f"{name} must be {wanted}, got {describe(value)}.")
        return number

    return check


def _strings(name: str, value: object) -> object:
    """Stop strings: a string or a list of non-empty strings."""
    strings = [value] if isinstance(value, str) else value
    if not isinstance(strings, list | tuple) or not all(isinstance(s, str) for s in strings):
        raise InvalidInferenceArgumentError(
            f"{name} must be a string or a list of strings, got {describe(value)}."
        )
    if any(s == "" for s in strings):
        raise InvalidInferenceValueError(f"{name}: stop strings must not be empty.")
    return [plain_str(s) for s in strings]


_PARSING_KEYS = {
    "enabled": "enabled",
    "start_string": "startString",
    "startString": "startString",
    "end_string": "endString",
    "endString": "endString",
}


def _reasoning_parsing(name: str, value: object) -> object:
    """``True``/``False``, or ``{"enabled", "start_string", "end_string"}`` (either spelling)."""
    start, end = DEFAULT_THINK_TAGS
    if isinstance(value, bool):
        return {"enabled": value, "startString": start, "endString": end}
    if isinstance(value, msgspec.Struct) and hasattr(value, "to_dict"):
        value = value.to_dict()  # the SDK's LlmReasoningParsing struct
    if not isinstance(value, Mapping):
        raise InvalidInferenceArgumentError(
            f"{name} must be True, False or a dict "
            f"{{'enabled': bool, 'start_string': str, 'end_string': str}}, "
            f"got {type(value).__name__} {describe(value)}."
        )
    unknown = sorted(str(k) for k in value if k not in _PARSING_KEYS)
    if unknown:
        raise InvalidInferenceArgumentError(
            f"{name} has unknown key(s) {named(unknown)}; it takes enabled, start_string, "
            "end_string."
        )
    given = _by_camel_name(name, value, _PARSING_KEYS)
    if ("startString" in given) != ("endString" in given):
        # One tag alone would be paired with ``<think>``/``</think>``, tags the model
        # may never write (found by a probe): the pair is asked for whole.
        missing = "end_string" if "startString" in given else "start_string"
        if any(key in value for key in ("startString", "endString")):
            missing = _PARSING_KEYS[missing]  # in the spelling the caller wrote
        raise InvalidInferenceArgumentError(
            f"{name} gives one reasoning tag without the other: add {missing!r} "
            f"(or give neither for {start!r} ... {end!r})."
        )
    parsed: dict[str, Any] = {"enabled": True, "startString": start, "endString": end}
    parsed.update(given)
    if not isinstance(parsed["enabled"], bool):
        raise InvalidInferenceArgumentError(
            f"{name}: 'enabled' must be True or False, got {describe(parsed['enabled'])}."
        )
    for key in ("startString", "endString"):
        tag = parsed[key]
        if not isinstance(tag, str):
            raise InvalidInferenceArgumentError(
                f"{name}: {key!r} must be a string, got {type(tag).__name__}."
            )
        if parsed["enabled"] and not tag.strip():
            got = "empty" if not tag else f"only whitespace ({tag!r})"
            raise InvalidInferenceValueError(
                f"{name}: {key!r} must be the tag the model writes, such as "
                f"{DEFAULT_THINK_TAGS[key == 'endString']!r}; got {got}."
            )
        parsed[key] = plain_str(tag)
    return parsed


class Setting(msgspec.Struct, frozen=True):
    """One prediction setting we check ourselves.

    Attributes
    ----------
    key
        The SDK's camelCase config key.
    keyword
        The Outlines-style keyword that sets it, if any.
    check
        ``check(label, value) -> value to send``; raises our errors.
    """

    key: str
    keyword: str | None
    check: Checker


SETTINGS: Mapping[str, Setting] = {
    s.key: s
    for s in (
        Setting("maxTokens", "max_tokens", _max_tokens),
        Setting("temperature", "temperature", _ranged(0, None)),
        Setting("topPSampling", "top_p", _ranged(0, 1, off=True)),
        Setting("topKSampling", "top_k", _top_k),
        Setting("minPSampling", "min_p", _ranged(0, 1, off=True)),
        Setting("repeatPenalty", "repeat_penalty", _ranged(0, None, low_open=True, off=True)),
        Setting("stopStrings", "stop", _strings),
        Setting("toolCallStopStrings", None, _strings),
        Setting("reasoningParsing", "reasoning_parsing", _reasoning_parsing),
        Setting("cpuThreads", None, _count),
        Setting("speculativeDecodingNumDraftTokensExact", None, _count),
        Setting("speculativeDecodingMinDraftLengthToConsider", None, _ranged(0, MAX_COUNT)),
        Setting("speculativeDecodingMinContinueDraftingProbability", None, _ranged(0, 1)),
        # Found by a probe: "" and " x" were sent, where model= refuses them.
        Setting("draftModel", None, lambda label, value: optional_name(label, value, "model key")),
    )
}
"""Settings checked by value, by camelCase key (the rest only by the SDK's struct)."""

# Outlines/OpenAI-style keyword -> SDK config key (camelCase, as `to_dict()` emits).
SIMPLE_KWARGS: Mapping[str, str] = {s.keyword: s.key for s in SETTINGS.values() if s.keyword}
_KEYWORD_OF_KEY = {key: keyword for keyword, key in SIMPLE_KWARGS.items()}
CALLBACK_KWARGS = (
    "on_message",
    "on_first_token",
    "on_prediction_fragment",
    "on_prompt_processing_progress",
)
# What the SDK passes each callback (``json_api.PredictionStreamBase``, both clients).
_CALLBACK_ARGS: Mapping[str, tuple[str, ...]] = {
    "on_message": ("the reply message, an lmstudio.AssistantResponse",),
    "on_first_token": (),
    "on_prediction_fragment": ("each fragment, an lmstudio.LlmPredictionFragment",),
    "on_prompt_processing_progress": ("the progress, a float from 0 to 1",),
}
_OTHER_KWARGS = ("config", "preset", "model", "timeout")

# Keywords people carry over from other backends, with what to do instead.
_REDIRECTS: Mapping[str, str] = {
    "seed": "LM Studio takes the seed when the model is loaded: load an instance with it, "
    "client.llm.load_new_instance(key, 'seeded', config={'seed': N}, ttl=None) (no ttl: "
    "an instance is not loaded again once unloaded), and pass 'seeded' as "
    "model_name (client.llm.model(key, config=...) returns a loaded instance as it is, "
    "without the seed)",
    "response_format": "pass the output type as the second argument, e.g. model(prompt, Person)",
    "response_model": "pass the output type as the second argument, e.g. model(prompt, Person)",
    "max_new_tokens": "use max_tokens=",
    "stop_strings": "use stop=",
    "top_p_sampling": "use top_p=",
    "retries": "only parse and parse_reply take it (parse_stream cannot take back the values "
    "it has yielded; generate returns the text as it is): use model.parse(prompt, "
    "output_type, retries=N)",
    "read_timeout": "it is a bound of the model, on each wait for LM Studio: pass it to "
    "from_lmstudio(client, model_name, read_timeout=...); a call takes timeout= (its whole "
    "time)",
    "connect_timeout": "it is a bound of the model, on connecting: pass it to "
    "from_lmstudio(client, model_name, connect_timeout=...); a call takes timeout= (its "
    "whole time)",
    "max_concurrency": "only a batch takes it (model.batch, or parse on a list of inputs), "
    "or from_lmstudio(client, model_name, max_concurrency=N)",
    # instructor's spellings (found by a probe of what its users write).
    "max_retries": "use retries= (model.parse(prompt, output_type, retries=N) re-asks N times)",
    "context": "only parse, parse_reply and parse_stream take it, for the type's Pydantic "
    "validators",
    "validation_context": "use context= (model.parse(prompt, output_type, context={...}))",
}


class _NoOutputType:
    """The default of ``parse``'s output type: none was given."""

    def __repr__(self) -> str:
        return "<required>"


NO_OUTPUT_TYPE: Any = _NoOutputType()
"""``parse``, ``parse_reply`` and ``parse_stream``'s default output type, so that one given
by another library's keyword (instructor's ``response_model=``) is refused by name, not with
Python's bare "missing 1 required positional argument" (found by a probe)."""


def missing_output_type(method: str, kwargs: Mapping[str, Any]) -> InvalidInferenceArgumentError:
    """Return the refusal of a ``parse`` (``parse_reply``, ``parse_stream``) call with no type.

    Parameters
    ----------
    method
        The method called (``"parse"``, ``"parse_reply"`` or ``"parse_stream"``).
    kwargs
        Its keyword arguments, where the type may be under another library's name.
    """
    given = [name for name in ("response_model", "response_format") if name in kwargs]
    said = f"{given[0]}= is not accepted: " if given else ""
    return InvalidInferenceArgumentError(
        f"{said}{method} takes the output type as its second argument, e.g. "
        f"model.{method}(prompt, Person)."
    )


class PredictionArgs(msgspec.Struct, frozen=True):
    """What a call's keyword arguments ask of the SDK.

    Attributes
    ----------
    config
        Prediction config in the SDK's camelCase dict form (``None`` if empty).
    preset
        Name of an LM Studio preset, or ``None``.
    callbacks
        SDK callbacks (``on_message``, ``on_first_token``, ...), passed through.
    model
        A per-call model key overriding the model's default, or ``None``.
    timeout
        Per-call timeout in seconds, or ``None`` for the model's default.
    """

    config: dict[str, Any] | None = None
    preset: str | None = None
    callbacks: dict[str, Callable[..., Any]] = msgspec.field(default_factory=dict)
    model: str | None = None
    timeout: float | None = None

    def reasoning_tags(self) -> tuple[str, str]:
        """Return the reasoning start and end strings this call asks LM Studio to parse.

        The ``reasoning_parsing`` strings when given (enabled or not: with parsing off,
        the model writes them as plain text), else ``<think>`` and ``</think>``; for
        ``ReasoningSplitter(start_tag=..., end_tag=...)``.
        """
        if not self.config:  # most calls: no ABC check on the hot path
            return DEFAULT_THINK_TAGS
        parsing = self.config.get("reasoningParsing")
        if isinstance(parsing, Mapping):
            start, end = str(parsing.get("startString", "")), str(parsing.get("endString", ""))
            if start.strip() and end.strip():  # checked when enabled; may be blank when off
                return start, end
        return DEFAULT_THINK_TAGS

    def stop_strings(self) -> tuple[str, ...]:
        """Return the stop strings this call gives LM Studio (``stop=`` or ``config=``)."""
        if not self.config:
            return ()
        stops = self.config.get("stopStrings")
        found = list(stops) if isinstance(stops, list | tuple) else []
        template = self.config.get("promptTemplate")
        if isinstance(template, Mapping) and isinstance(template.get("stopStrings"), list):
            found += template["stopStrings"]  # the prompt template's end a reply too
        return tuple(found)

    def sdk_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``LLM.respond`` / ``respond_stream``."""
        kwargs: dict[str, Any] = dict(self.callbacks)
        if self.config:
            kwargs["config"] = self.config
        if self.preset is not None:
            kwargs["preset"] = self.preset
        return kwargs


@cache
def _keys_of(config: type[msgspec.Struct]) -> dict[str, str]:
    """Map every key of an SDK config struct (camelCase and snake_case) to its camelCase form.

    The prediction config's are the keys ``config=`` accepts; the load config's are named
    when one is given to a call (`_config_hints`).
    """
    keys: dict[str, str] = {}
    for struct_field in msgspec.structs.fields(config):
        keys[struct_field.name] = keys[struct_field.encode_name] = struct_field.encode_name
    return keys


def accepted_keywords() -> list[str]:
    """Return the sorted list of accepted inference keywords."""
    return sorted([*SIMPLE_KWARGS, *CALLBACK_KWARGS, *_OTHER_KWARGS])


def check_seconds(name: str, value: object) -> float | None:
    """Check a timeout: ``None``, or a finite number of seconds in ``(0, MAX_SECONDS]``.

    Parameters
    ----------
    name
        How to name the setting in a message (``"timeout="``).
    value
        The value given.

    Returns
    -------
    float | None
        The timeout in seconds.

    Raises
    ------
    InvalidInferenceArgumentError
        If it is not a number.
    InvalidInferenceValueError
        If it is NaN, infinite, not positive or larger than `MAX_SECONDS`.
    """
    if value is None:
        return None
    seconds = real_number(value)
    if seconds is None:
        raise InvalidInferenceArgumentError(
            f"{name} must be a number of seconds, got {type(value).__name__} {describe(value)}."
        )
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise InvalidInferenceValueError(
            f"{name} must be a finite number of seconds, got {describe(value)}."
        )
    if seconds <= 0 or seconds > MAX_SECONDS:
        raise InvalidInferenceValueError(
            f"{name} must be more than 0 and at most {MAX_SECONDS:.0e} seconds, "
            f"got {describe(value)}."
        )
    return float(seconds)


def _config_hints(unknown: list[str], valid: list[str]) -> str:
    """Return what to do instead, for unknown ``config=`` keys known elsewhere.

    The names a call's keywords redirect (`_REDIRECTS`: ``seed`` belongs to the load
    config...) say the same here; ``top_p`` and the other call keywords have a config key
    of another name.
    """
    hints = []
    loading = _keys_of(LlmLoadModelConfig)
    for key in unknown:
        if key in _REDIRECTS:
            hints.append(f"{key!r}: {_REDIRECTS[key]}. ")
        elif key in SIMPLE_KWARGS:
            hints.append(
                f"{key!r} is a keyword: pass {key}= to the call, "
                f"or config[{SIMPLE_KWARGS[key]!r}]. "
            )
        elif (close := did_you_mean(key, valid)) and key not in loading:  # a typo (a probe)
            hints.append(f"{key!r}:{close} ")
        elif key in loading:  # found by a probe: `contextLength` had no word of loading
            hints.append(
                f"{key!r} is a load setting, not a prediction's: load an instance with it, "
                f"client.llm.load_new_instance(key, 'mine', config={{{loading[key]!r}: ...}}, "
                "ttl=None) (no ttl: an instance is not loaded again once unloaded), and pass "
                "'mine' as model_name. "
            )
    return "".join(hints)


def _by_camel_name(name: str, given: Mapping[Any, Any], names: Mapping[Any, str]) -> dict[str, Any]:
    """Return ``given`` under its camelCase names, refusing a key given in two spellings.

    ``names`` maps every accepted spelling (``maxTokens``, ``max_tokens``) to the camelCase
    name; every key of ``given`` is in it.
    """
    result: dict[str, Any] = {}
    spelled: dict[str, object] = {}
    for key, value in given.items():
        camel = names[key]
        if camel in result:
            raise InvalidInferenceArgumentError(
                f"{name} sets {camel!r} twice (as {spelled[camel]!r} and {key!r}); "
                "give each key once, in either spelling."
            )
        spelled[camel] = key
        result[camel] = value
    return result


def _user_config(config: object) -> dict[str, Any]:
    """Normalise ``config=`` to camelCase keys, refusing keys the SDK would drop."""
    if isinstance(config, LlmPredictionConfig):
        config = config.to_dict()
    if not isinstance(config, Mapping):
        raise InvalidInferenceArgumentError(
            "config= must be a dict or an lmstudio.LlmPredictionConfig, "
            f"got {type(config).__name__}."
        )
    keys = _keys_of(LlmPredictionConfig)
    unknown = sorted(str(k) for k in config if k not in keys)
    if unknown:
        valid = sorted({v for v in keys.values()} - {"raw"})  # "raw" is refused below
        # Each key shortened, as other bad values are (found by a probe: a 1 MB key).
        raise InvalidInferenceArgumentError(
            f"Unknown key(s) in config=: {named(unknown)}. LM Studio would ignore them silently. "
            f"{_config_hints(unknown, valid)}Valid keys: {valid}."
        )
    result = _by_camel_name("config=", config, keys)
    if "raw" in result:  # a field of the SDK's struct that its request builder refuses
        raise InvalidInferenceArgumentError(
            "config['raw'] cannot be sent: the lmstudio SDK refuses it in a prediction "
            "config. Set each setting by its own key (or keyword, e.g. max_tokens=)."
        )
    for camel, value in result.items():
        setting = SETTINGS.get(camel)
        if setting is not None and value is not None:
            result[camel] = setting.check(f"config[{camel!r}]", value)
    # Let the SDK's own struct check the rest (structured, promptTemplate, ...) now.
    try:
        kept = LlmPredictionConfig._from_any_dict(result).to_dict()
    except msgspec.ValidationError as exc:
        raise InvalidInferenceArgumentError(_struct_error(str(exc))) from exc
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInferenceArgumentError(f"Invalid value in config=: {exc}") from exc
    dropped = _dropped_keys(result, kept, "config")
    if dropped:
        raise InvalidInferenceArgumentError(
            f"Unknown key(s) in config=: {', '.join(dropped)}. The lmstudio SDK drops them "
            "silently, so LM Studio would never see them: check their spelling against "
            "LM Studio's prediction config (structured takes type, jsonSchema, gbnfGrammar)."
        )
    _check_structured(result.get("structured"))
    tools: object = kept.get("rawTools")
    if (
        isinstance(tools, dict)
        and tools.get("type") == "toolArray"
        and (tools.get("tools") or tools.get("force"))
    ):
        # A forced call with no tools is one too (found by a probe: it was sent).
        # Found by a probe: LM Studio ends the reply at the model's tool call (stop reason
        # toolCalls), and every call returned the text before it, the call dropped silently.
        raise InvalidInferenceArgumentError(
            "config['rawTools'] offers the model tools, and this library has nothing to "
            "return a tool call in: LM Studio ends the reply at the call, and the text before "
            "it would come back as the whole answer. For tool use, call the lmstudio SDK's "
            "model.act(...) (it runs the tools); here, leave rawTools out (or set it to "
            "{'type': 'none'})."
        )
    template: object = kept.get("promptTemplate")
    if isinstance(template, dict):
        # Its stop strings end a reply as config['stopStrings'] do: checked as they are, and
        # read by the check of a cut reply (found by a probe: "" was sent, and a number cut
        # by one of them was returned by parse as valid). The SDK's camelCase form is sent.
        sent = dict(template)
        if sent.get("stopStrings") is not None:
            label = "config['promptTemplate']['stopStrings']"
            sent["stopStrings"] = _strings(label, sent["stopStrings"])
        result["promptTemplate"] = sent
    # A key set to None is unset (the SDK's struct sends nothing for it): dropped here, so
    # that it does not count as given next to a keyword or an output type.
    return {camel: value for camel, value in result.items() if value is not None}


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


_AT = re.compile(r"(?P<what>.*) - at `\$(?P<path>(?:\.\w+|\[\d+\])*)`", re.DOTALL)


def _struct_error(text: str) -> str:
    """Say which ``config=`` value the SDK's struct refused, and what it takes.

    msgspec says "Invalid enum value 'drop' - at `$.contextOverflowPolicy`" (found by a
    probe: no list of what is valid, unlike every other config check).
    """
    found = _AT.fullmatch(text)
    if found is None:
        return f"Invalid value in config=: {text}"
    parts = re.findall(r"\.(\w+)|\[(\d+)\]", found["path"])
    where = "config" + "".join(f"[{key!r}]" if key else f"[{index}]" for key, index in parts)
    what = found["what"]
    allowed = _literal_values(LlmPredictionConfig, [key for key, _ in parts])
    enum = re.fullmatch(r"Invalid enum value (.*)", what)
    if enum is not None and allowed:
        return (
            f"{where} must be one of {', '.join(map(repr, allowed))}, got {shortened(enum[1], 60)}."
        )
    return f"Invalid value in config=: {where}: {shortened(what, 300)}."


def _literal_values(struct: type, keys: list[str]) -> tuple[object, ...] | None:
    """Return the values the field at ``keys`` (camelCase) of an SDK struct takes, if a Literal."""
    import msgspec.inspect as mi

    info: Any = mi.type_info(struct)
    for key in keys:
        info = next((t for t in _members(info) if isinstance(t, mi.StructType)), None)
        field = next((f for f in info.fields if f.encode_name == key), None) if info else None
        if field is None:
            return None
        info = field.type
    values = [v for t in _members(info) if isinstance(t, mi.LiteralType) for v in t.values]
    return tuple(values) or None


def _members(info: Any) -> tuple[Any, ...]:
    """Return a msgspec type's members: those of a union, else the type itself."""
    import msgspec.inspect as mi

    return tuple(info.types) if isinstance(info, mi.UnionType) else (info,)


def _dropped_keys(given: object, kept: object, path: str) -> list[str]:
    """Return the paths of keys in ``given``'s mappings that the SDK's round trip lost.

    The SDK reads ``config=`` into its structs, which drop what they do not know, at any
    depth (``structured: {"typo": 1}``). ``kept`` is what its struct writes back: a key
    it does not hold (in either spelling) was dropped. A key set to ``None`` is unset.
    """
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        lost: list[str] = []
        for key, value in given.items():
            here = f"{path}[{key!r}]"
            name = _camel(key) if isinstance(key, str) else key
            if name in kept:
                lost += _dropped_keys(value, kept[name], here)
            elif key in kept:
                lost += _dropped_keys(value, kept[key], here)
            elif value is not None:
                lost.append(here)
        return lost
    if isinstance(given, list | tuple) and isinstance(kept, list | tuple):
        return [
            lost
            for index, (item, back) in enumerate(zip(given, kept, strict=False))
            for lost in _dropped_keys(item, back, f"{path}[{index}]")
        ]
    return []


# What each kind of structured output reads; LM Studio ignores the other bodies.
_STRUCTURED_BODIES = {"none": (), "json": ("jsonSchema",), "gbnf": ("gbnfGrammar",)}


def _check_structured(structured: object) -> None:
    """Refuse a ``structured`` setting with a body its ``type`` does not read.

    ``{"type": "none", "jsonSchema": ...}`` would be sent as free text, and a ``json`` one
    with a ``gbnfGrammar`` would lose the grammar: either way, silently.
    """
    if not isinstance(structured, Mapping):
        return
    kind = structured.get("type")
    reads = _STRUCTURED_BODIES.get(kind) if isinstance(kind, str) else None
    if reads is None:
        return  # the SDK's struct has checked the type
    ignored = sorted(
        _camel(str(key))
        for key, value in structured.items()
        if value is not None and _camel(str(key)) not in (*reads, "type")
    )
    if ignored:
        raise InvalidInferenceArgumentError(
            f"config['structured'] has type {kind!r} and also {ignored}, which that type "
            "does not read: LM Studio would ignore them silently. Set type to 'json' for a "
            "jsonSchema or 'gbnf' for a gbnfGrammar, or leave the other out."
        )


def optional_name(name: str, value: object, what: str, *, none: str = "") -> str | None:
    """Check a model's key or identifier, or a preset's name (``None`` passes).

    Found by a probe: a name with a space or line break around it (copied from ``lms ls``)
    went out, and came back "no model matching"; a model's handle was refused without
    saying what to pass instead.

    Raises
    ------
    InvalidInferenceArgumentError
        Naming ``name``: not a non-empty str (``none``: how the message goes on, such as
        " or None"), or one with whitespace around it. Before anything is sent.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip():
        if value != value.strip():
            raise InvalidInferenceArgumentError(
                f"{name} {describe(value)} has whitespace around it, which LM Studio's names "
                f"do not: pass {describe(value.strip())}."
            )
        return plain_str(value)
    identifier = getattr(value, "identifier", None)
    handle = (
        f" For a loaded model's handle, pass its identifier ({identifier!r})."
        if isinstance(identifier, str)
        else ""
    )
    raise InvalidInferenceArgumentError(
        f"{name} must be a non-empty {what} string{none}, got {describe(value)}.{handle}"
    )


def parse_inference_kwargs(kwargs: Mapping[str, Any]) -> PredictionArgs:
    """Check and convert a call's inference keyword arguments.

    Parameters
    ----------
    kwargs
        The keyword arguments given to ``generate`` / ``stream`` / ``batch``.

    Returns
    -------
    PredictionArgs
        The SDK settings they ask for.

    Raises
    ------
    InvalidInferenceArgumentError
        For an unknown keyword, a wrong type, or a setting given twice.
    InvalidInferenceValueError
        For a value out of range.
    """
    if not kwargs:
        return _EMPTY
    for name in kwargs:
        if name in _KNOWN:
            continue
        if name in _REDIRECTS:
            raise InvalidInferenceArgumentError(f"{name}= is not accepted: {_REDIRECTS[name]}.")
        keyword = _KEYWORD_OF_KEY.get(name)  # maxTokens= (the SDK's key): max_tokens=
        hint = (
            f" {name} is LM Studio's key: pass {keyword}=, or config={{{name!r}: ...}}."
            if keyword is not None
            else did_you_mean(name, accepted_keywords(), "=")
        )
        raise InvalidInferenceArgumentError(
            f"Unknown keyword argument {shortened(name)}=.{hint} "
            f"Accepted: {', '.join(accepted_keywords())}; "
            "parse also takes retries= and context=, parse_stream context=, and a batch "
            "max_concurrency=."
        )
    config = _user_config(kwargs["config"]) if kwargs.get("config") is not None else {}
    for name, key in SIMPLE_KWARGS.items():
        value = kwargs.get(name)
        if value is None:
            continue
        if key in config:
            raise InvalidInferenceArgumentError(
                f"{name}= and config[{key!r}] both set the same thing: give only one."
            )
        config[key] = SETTINGS[key].check(f"{name}=", value)
    callbacks: dict[str, Callable[..., Any]] = {}
    for name in CALLBACK_KWARGS:
        callback = kwargs.get(name)
        if callback is None:
            continue
        callbacks[name] = _check_callback(name, callback)
    return PredictionArgs(
        config=config or None,
        preset=optional_name("preset=", kwargs.get("preset"), "preset name"),
        callbacks=callbacks,
        model=optional_name("model=", kwargs.get("model"), "model key"),
        timeout=check_seconds("timeout=", kwargs.get("timeout")),
    )


def _check_callback(name: str, callback: object) -> Callable[..., Any]:
    """Return an SDK callback, refusing one the SDK could not run.

    The SDK calls callbacks without awaiting them, on both clients: an ``async def``
    callback would only make coroutines that never run (and a "never awaited" warning
    for each message).

    Raises
    ------
    InvalidInferenceArgumentError
        If ``callback`` is not callable, or is an async function.
    """
    if not callable(callback):
        raise InvalidInferenceArgumentError(f"{name}= must be callable, got {describe(callback)}.")
    call = callback if inspect.isroutine(callback) else type(callback).__call__
    try:
        is_async = inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(call)
    except TypeError:  # a Mock(spec=f) fails Python 3.11's check (found by a review)
        is_async = False
    if is_async:
        raise InvalidInferenceArgumentError(
            f"{name}= is an async function, but LM Studio's SDK calls callbacks without "
            "awaiting them, so it would never run: pass a plain function (it runs in the "
            "event loop, so keep it quick), or read the reply with async for over "
            "model.stream(...) and await your work there."
        )
    _check_arity(name, callback)
    return callback


def _check_arity(name: str, callback: Callable[..., Any]) -> None:
    """Refuse a callback that cannot take what the SDK passes it.

    The SDK only logs what a progress, first-token or fragment callback raises, so a
    wrong signature would silently never run; a wrong ``on_message`` would fail after
    the whole reply was generated.
    """
    passed = _CALLBACK_ARGS[name]
    try:
        # Not through __wrapped__: a functools.wraps wrapper may take other arguments than
        # the function it wraps (found by a review: one that supplies the first was refused).
        signature = inspect.signature(callback, follow_wrapped=False)
    except Exception:  # a builtin without a signature, or an object whose lookup fails
        # otherwise (a proxy's __signature__ raising: found by a probe; the SDK calls it)
        return
    try:
        signature.bind(*passed)
    except TypeError:
        takes = f"one argument ({passed[0]})" if passed else "no arguments"
        # Named, not by its repr's address (found by a probe: "<function <lambda>...at 0x...>")
        shown = getattr(callback, "__qualname__", None) or f"a {type(callback).__qualname__}"
        shown = shown if isinstance(shown, str) else repr(callback)
        raise InvalidInferenceArgumentError(
            f"{name}= is called by LM Studio's SDK with {takes}, but {shown:.120} has the "
            f"signature {signature}: make it take "
            f"{'one positional argument' if passed else 'no required arguments'}."
        ) from None


_KNOWN = frozenset(accepted_keywords())
_EMPTY = PredictionArgs()
