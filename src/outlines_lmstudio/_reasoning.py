"""Separating a reasoning model's thinking from its answer (pure, incremental, no I/O).

LM Studio tells a client where the reasoning is in up to three ways, and a reply
may use several at once (sources and what is inferred: ``docs/reasoning.md``):

* **Typed fragments.** Each fragment carries ``reasoningType``: ``none``,
  ``reasoning``, ``reasoningStartTag`` or ``reasoningEndTag``.
* **The synthetic marker.** From LM Studio 0.4.19, a reasoning model asked for a
  JSON schema thinks, then LM Studio inserts `SYNTHETIC_MARKER` and the answer
  follows under the schema. The marker has been seen typed as the end tag and
  also inside ``none``-typed text.
* **Harmony** (gpt-oss): ``<|channel|>analysis<|message|>...<|end|>
  <|start|>assistant<|channel|>final<|message|>...``. The TypeScript SDK flags
  the control text ``isStructural``; the Python SDK 1.5.0 has no such field, so
  the control tokens are recognised here by their exact spelling. A reply is
  Harmony once a header (``<|start|>`` or ``<|channel|>``) opens its answer, that
  is before any answer text: then its control tokens are control text, up to the
  ``final`` channel's ``<|message|>``. The final message is the answer, and text in
  it is answer text (a JSON string may hold ``<|channel|>``), except a closing
  ``<|end|>``, ``<|return|>`` or ``<|call|>`` that ends the reply or is followed at
  once by ``<|start|>`` (a new message). In the answer of any other reply control
  tokens are answer text (a model may well write ``<|end|>`` in a JSON string).

Untyped ``<think>...</think>`` (reasoning parsing off, or a template LM Studio
does not know) is recognised when the reply opens with the start tag. A bare end
tag in an untyped reply that has not reasoned yet also ends reasoning: some
templates (Qwen3 2507) put the start tag in the prompt, so the model writes only
``reasoning</think>answer``. A later mention of either tag is answer text, and so is a
bare end tag in a reply asked to be JSON that opens a JSON object, array or string: that
reply is its answer from the first character (``{"note": "</think>"}`` and, for a ``str``,
``"Close it with </think>."`` keep their text). A number or ``true`` may open reasoning
text too ("1. First, ...", "the user asks"), so those do not count.

The rule, whichever signals arrive: **the answer is the untyped, non-control
text after the last piece of reasoning**, with the whitespace that separates it
from the reasoning removed. Text that could still become a marker, tag or
control token is held back, and only that; everything else is released at once.

If untyped text is followed by a marker or end tag, that text was reasoning all
along. `ReasoningSplitter.answer` is corrected (the text moves to
`ReasoningSplitter.reasoning`), and so is what the same `feed` returns; if some of it
was handed out by an earlier `feed`, `ReasoningSplitter.retracted` is set, because
chunks already handed out cannot be taken back.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from enum import Enum, auto
from typing import Any, NamedTuple

from ._reply import ReplyChunk, ReplyStats
from .errors import EmptyAnswerError, ParseError, ReasoningTruncatedError

__all__ = [
    "HARMONY_TOKENS",
    "SYNTHETIC_MARKER",
    "ReasoningSplitter",
    "json_openers",
    "plain_reply",
    "reply_problem",
    "root_types",
    "unparsed_tags_hint",
]

# Reasoning tags other model families write, which only a reasoningParsing setting with
# them separates (the splitter knows <think> and Harmony): a reply that opens with one
# and fails to validate gets a hint naming the setting.
_OTHER_TAGS = {
    "[THINK]": "[/THINK]",  # Magistral
    "<thinking>": "</thinking>",
    "<reasoning>": "</reasoning>",
    "<seed:think>": "</seed:think>",  # Seed-OSS
    "<|begin_of_thought|>": "<|end_of_thought|>",
    # Separated by default; a reply opens with it here only when a reasoningParsing setting
    # named other tags (found by a probe: such a reply failed with no hint).
    "<think>": "</think>",
}


def unparsed_tags_hint(raw: str) -> str:
    """Name the reasoning setting that separates a reply opening with another family's tag.

    Returns
    -------
    str
        A sentence to add to a validation error (``""`` for other replies).
    """
    head = raw.lstrip()
    for start, end in _OTHER_TAGS.items():
        if head.startswith(start):
            parsing = {"enabled": True, "start_string": start, "end_string": end}
            return (
                f" (the reply opens with {start}, a reasoning tag LM Studio did not "
                f"separate: pass reasoning_parsing={parsing!r})"
            )
    return ""


_JSON_OPENERS = frozenset('{["')
"""First characters of a JSON answer that reasoning text does not open with (see above)."""

_MARKER_HEAD = "__LM_STUDIO_INTERNAL_LSEP_SYNTHETIC_REASONING_END_"
SYNTHETIC_MARKER = _MARKER_HEAD + "f4e9a8d2c6b14d0c9e5f3a7b8c1d2e6a__"
# The 32 hex digits look like a build-specific id; accept any, so another LM Studio
# build does not leak its marker into answers.
_MARKER_RE = re.compile(re.escape(_MARKER_HEAD) + r"[0-9a-f]{32}__")
_MARKER_TAIL_RE = re.compile(r"[0-9a-f]{0,32}|[0-9a-f]{32}_")
_MARKER_MAX = len(SYNTHETIC_MARKER)

HARMONY_TOKENS = (
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|end|>",
    "<|return|>",
    "<|constrain|>",
    "<|call|>",
)
_HARMONY_ANSWER_CHANNELS = frozenset({"final", ""})
_MARKER = "\x00marker"  # the token name `_find` reports for a marker match (never a tag)


class _Mode(Enum):
    START = auto()  # nothing seen yet: an untyped <think> may open the reply
    ANSWER = auto()  # untyped text is answer text
    THINK = auto()  # inside an untyped <think> block
    REASON = auto()  # inside typed reasoning fragments
    HEADER = auto()  # inside a Harmony header, up to <|message|>
    HREASON = auto()  # inside a Harmony analysis/commentary message


_REASONING_MODES = (_Mode.THINK, _Mode.REASON, _Mode.HREASON)  # a tuple: no Enum hashing


def json_openers(schema: Mapping[str, Any] | None) -> frozenset[str]:
    """Return the characters a JSON document valid against ``schema`` can open with.

    Of ``{``, ``[`` and ``"``, by the root's ``type``; all three when it names none (an
    ``anyOf``, a ``$ref``), or for no schema.
    """
    names = root_types(schema)
    if names is None:
        return _JSON_OPENERS
    return frozenset(_OPENER_OF[name] for name in names if name in _OPENER_OF)


def root_types(schema: Mapping[str, Any] | None) -> list[Any] | None:
    """Return the ``type`` a schema's root names, as a list, or ``None`` if it names none.

    A root that is a one-branch ``anyOf`` (``_rewrites.shield_root_rules``) names its
    branch's.
    """
    branches = schema.get("anyOf") if schema is not None and "type" not in schema else None
    if isinstance(branches, list) and len(branches) == 1 and isinstance(branches[0], Mapping):
        return root_types(branches[0])
    kinds = schema.get("type") if schema is not None else None
    return [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else None


_OPENER_OF = {"object": "{", "array": "[", "string": '"'}


class ReasoningSplitter:
    """Split a prediction's fragments into reasoning and answer, incrementally.

    Feed each fragment as it arrives; each call returns the pieces that are
    certain so far. Call `close` at the end to release held-back text. Take the
    finished texts from `answer` and `reasoning`, not by joining the chunks: they
    differ only when `retracted` is set (see the module docstring). A driver::

        splitter = ReasoningSplitter()
        for fragment in stream:
            for chunk in splitter.feed(fragment.content, fragment.reasoning_type,
                                       tokens_count=fragment.tokens_count):
                ...  # stream chunk.text; chunk.reasoning tells which side
        tail = splitter.close()
        stats = reply_stats(result.stats, reasoning_tokens=splitter.reasoning_tokens)
        error = reply_problem(splitter.answer, splitter.reasoning, stats, structured=...,
                              in_reasoning=splitter.in_reasoning or splitter.in_header)

    Parameters
    ----------
    start_tag, end_tag
        The untyped reasoning tags recognised at the start of a reply (LM Studio's
        ``reasoningParsing`` start and end strings; ``<think>``/``</think>`` by
        default).
    json_answer
        The reply was asked to be a JSON document: one that opens a JSON object, array or
        string is its answer from the start, so a bare end tag in it is answer text.
    json_openers
        The characters that answer may open with (`json_openers` of its schema): a reply
        opening otherwise (reasoning quoting the question, for an object) is not it.
    untyped_tags
        Whether the think tags in untyped text open or close reasoning. ``False`` for a
        raw completion, which continues the prompt's text as is: only what the server
        marks (typed fragments, its marker, Harmony headers) is reasoning.

    Attributes
    ----------
    in_reasoning
        ``True`` if the reply so far ended inside reasoning.
    in_header
        ``True`` if the reply so far ended inside a Harmony header (``<|channel|>...``,
        before its ``<|message|>``): control text, before any answer of that message.
    retracted
        ``True`` if text first given out as answer later proved to be reasoning.
    retractions
        How many times the answer so far proved to be reasoning (whether or not it had
        been given out): the answer then begins anew.
    reasoning_tokens
        The ``tokensCount`` of the fragments that were reasoning or its tags (also those
        first taken for answer text, once they prove to be reasoning).
    """

    # Defaults on the class: one splitter is made per call, and only what differs from
    # them is set per instance (the lists, the tags, and the first state change).
    _mode = _Mode.START
    _hold = ""
    _strip_leading = False  # drop the separator after reasoning
    _header = ""
    _closed = False
    in_reasoning = False
    retracted = False
    retractions = 0
    reasoning_tokens = 0
    _answer_tokens = 0  # tokens of the answer so far: reasoning if it is taken back
    _typed = False  # the server has typed a fragment as reasoning
    # Reasoning has begun or ended somewhere in this reply, or (json_answer) the reply
    # opened a JSON object, array or string: a bare end tag no longer ends reasoning.
    _reasoned = False
    _harmony = False  # a Harmony header opened the answer: control tokens are control
    _final = False  # inside a Harmony final message: only its closing token is control
    _answer_open = True  # no answer text since the start or the last reasoning
    _boundaries = 0  # how many times reasoning ended (end tags, markers, final headers)
    _openers = _JSON_OPENERS  # the characters a JSON answer may open with (`json_openers`)

    def __init__(
        self,
        *,
        start_tag: str = "<think>",
        end_tag: str = "</think>",
        json_answer: bool = False,
        json_openers: frozenset[str] = _JSON_OPENERS,
        untyped_tags: bool = True,
    ) -> None:
        if not start_tag or not end_tag:
            raise ValueError("reasoning start and end tags must be non-empty strings")
        # Matched after the reply's leading whitespace, so without its own (``"\n<think>"``).
        self._start_tag = start_tag.lstrip() or start_tag
        self._end_tag = end_tag
        self._json_answer = json_answer
        if json_openers != _JSON_OPENERS:  # most calls: the class default
            self._openers = json_openers
        if not untyped_tags:  # the answer from the first character, with no tags to find
            self._mode = _Mode.ANSWER
            self._reasoned = True
        self._answer: list[str] = []
        self._reasoning: list[str] = []
        self._out: list[ReplyChunk] = []
        # The control tokens each state looks for, with a pattern of their first characters:
        # built once, since every fragment is checked against them.
        self._token_sets = _mode_tokens(start_tag, end_tag)

    @property
    def answer(self) -> str:
        """The answer so far: the text after the last reasoning, control text removed."""
        return "".join(self._answer)

    @property
    def in_header(self) -> bool:
        """Whether the reply so far ended inside a Harmony header, before its message."""
        return self._mode is _Mode.HEADER

    @property
    def reasoned(self) -> bool:
        r"""Whether the reply held reasoning, even empty (``<think>\n\n</think>``)."""
        return self._typed or self._boundaries > 0

    @property
    def reasoning(self) -> str:
        """The reasoning so far, without tags, markers or Harmony control text."""
        return "".join(self._reasoning)

    def feed(
        self,
        content: str,
        reasoning_type: str,
        *,
        tokens_count: int = 0,
        structural: bool = False,
    ) -> list[ReplyChunk]:
        """Take one fragment; return the pieces now known to be answer or reasoning.

        Parameters
        ----------
        content
            The fragment's text.
        reasoning_type
            Its ``reasoningType``: ``none``, ``reasoning``, ``reasoningStartTag``
            or ``reasoningEndTag``.
        tokens_count
            Its ``tokensCount``, summed into `reasoning_tokens` when it is reasoning.
        structural
            Its ``isStructural`` flag, where the client has it: the text is control
            text, read for where it switches channel but never given out.

        Returns
        -------
        list[ReplyChunk]
            Consecutive pieces of one kind are merged; may be empty.
        """
        if self._closed:
            raise RuntimeError("ReasoningSplitter.feed() after close()")
        if self._mode is _Mode.START and reasoning_type == "none" and not structural:
            # The first fragment of most replies: text that cannot open a think block
            # begins the answer, as `_scan_start` decides, and goes on by the path below.
            head = (self._hold + content).lstrip()[:1]
            if head and head != self._start_tag[0]:
                self._mode = _Mode.ANSWER
                if self._json_answer and head in self._openers:
                    self._reasoned = True  # the JSON answer has begun (module docstring)
        if (
            reasoning_type == "none"
            and self._mode is _Mode.ANSWER
            and content
            and not (self._hold or self._strip_leading or structural or self.in_reasoning)
            and self._tokens().first.search(content) is None
        ):
            # Each answer fragment of a reply under way: plain text, with nothing held back
            # and nothing to strip, is answer as it stands. This is what `_scan`, `_literal`
            # and `_emit` do for it, without their four calls a fragment (`_out` is empty
            # between calls: `_take` empties it).
            if self._answer_open and not content.isspace():
                self._answer_open = False
            self._answer.append(content)
            self._answer_tokens += tokens_count
            return [ReplyChunk(content, False)]
        answer_before, reasoning_before = len(self._answer), len(self._reasoning)
        was_reasoning = self.in_reasoning
        boundaries_before, retractions_before = self._boundaries, self.retractions
        if reasoning_type != "none":
            self._typed = True
        if reasoning_type == "reasoningStartTag":
            self._flush_before_reasoning()
            self._enter(_Mode.REASON)
        elif reasoning_type == "reasoningEndTag":
            self._flush_hold()
            self._boundary()
        elif reasoning_type == "reasoning":
            in_header = self._mode is _Mode.HEADER
            if in_header:
                # It may finish a Harmony header begun in untyped text: read up to the
                # header's end; the text after it is reasoning, whatever the channel.
                content = self._scan(content, structural, header_only=True)
            if not in_header or content:  # (the rest of a fragment that ended a header)
                if self._mode not in _REASONING_MODES:
                    self._flush_before_reasoning()
                    self._enter(_Mode.REASON)
                # Typed reasoning stays reasoning: a marker or Harmony header written inside
                # it is dropped, but switches nothing (the answer begins with untyped text).
                self._scan(content, structural, inert=True)
        else:  # "none", or a type this client does not know: answer unless shown otherwise
            if self._mode is _Mode.REASON:
                self._flush_hold()
                self._mode = _Mode.ANSWER
                self._strip_leading = True
                self.in_reasoning = False
            self._scan(content, structural)
        if self.retractions != retractions_before:  # the answer began anew in this fragment
            answer_before = 0
        gave_answer = len(self._answer) > answer_before  # pieces appended (never empty ones)
        gave_reasoning = len(self._reasoning) > reasoning_before
        if reasoning_type != "none" or (
            not gave_answer
            and (
                gave_reasoning
                or was_reasoning
                or self.in_reasoning
                or self.in_header
                or self._boundaries != boundaries_before  # an end tag or marker: its tag
            )
        ):
            self.reasoning_tokens += tokens_count
        else:
            self._answer_tokens += tokens_count
        return self._take()

    def close(self) -> list[ReplyChunk]:
        """End the reply: release held-back text as what it is; return the last pieces."""
        if not self._closed:
            self._flush_hold()
            self._closed = True
        return self._take()

    # -- scanning ---------------------------------------------------------------

    def _scan(
        self, text: str, structural: bool, inert: bool = False, header_only: bool = False
    ) -> str:
        """Read ``text``; return what is left unread (only with ``header_only``).

        ``header_only``: stop just after the control token that ends a Harmony header.
        """
        buf = self._hold + text
        self._hold = ""
        pos = 0
        while pos < len(buf):
            if self._mode is _Mode.START:
                pos = self._scan_start(buf, pos)  # len(buf) when all of it is held
                continue
            tokens, first = self._tokens()
            if first.search(buf, pos) is None:  # the common case: plain text
                self._literal(buf[pos:], structural)
                return ""
            hit = _find(buf, pos, tokens)
            if hit is None:
                keep = _held_from(buf, pos, tokens)
                self._literal(buf[pos:keep], structural)
                self._hold = buf[keep:]
                return ""
            start, end, token = hit
            self._literal(buf[pos:start], structural)
            if self._final and token in _HARMONY_CLOSERS:
                after = buf[end:]
                if _could_become(after, _HARMONY_NEW) or not after:
                    self._hold = buf[start:]  # which it is depends on what follows
                    return ""
                if after.startswith(_HARMONY_NEW):  # the final message ends, another begins
                    self._final = False
                else:  # written inside the answer
                    self._literal(token, structural)
                pos = end
                continue
            if inert:
                pass  # dropped, switching nothing
            elif token in self._tokens().tokens:
                self._control(token)
                if header_only and self._mode is not _Mode.HEADER:
                    return buf[end:]
            else:  # the text before it began the answer, where it is text (Harmony headers)
                self._literal(buf[start:end], structural)
            pos = end
        return ""

    def _scan_start(self, buf: str, pos: int) -> int:
        """At the very start: open an untyped think block, hold, or begin the answer."""
        rest = buf[pos:].lstrip()
        if rest.startswith(self._start_tag):
            self._enter(_Mode.THINK)
            return len(buf) - len(rest) + len(self._start_tag)
        if self._start_tag.startswith(rest):
            self._hold = buf[pos:]  # whitespace, or a possible start tag
            return len(buf)
        self._mode = _Mode.ANSWER
        if self._json_answer and rest[:1] in self._openers:
            self._reasoned = True  # the JSON answer has begun: see the module docstring
        return pos

    def _tokens(self) -> _Tokens:
        sets = self._token_sets
        if self._mode is _Mode.THINK:
            return sets.think
        if self._mode is _Mode.ANSWER and self._final:
            return sets.final
        if self._mode is not _Mode.ANSWER or self._harmony:
            return sets.harmony
        # An untyped reply that has not reasoned yet: a bare end tag closes reasoning
        # whose start tag was in the prompt (Qwen3 2507 templates open <think> there).
        untyped = not self._reasoned and not self._typed
        if self._answer_open:  # a Harmony header may still open the answer
            return sets.untyped_open if untyped else sets.answer_open
        return sets.untyped if untyped else sets.answer

    def _literal(self, text: str, structural: bool) -> None:
        if not text:
            return
        if self._mode is _Mode.HEADER:
            self._header += text
        elif structural:
            return  # control text the server flagged: never answer, never reasoning
        elif self._mode in _REASONING_MODES:
            self._emit(text, reasoning=True)
        else:
            if self._strip_leading:
                text = text.lstrip()
                if not text:
                    return
                self._strip_leading = False
            self.in_reasoning = False
            if self._answer_open and not text.isspace():
                self._answer_open = False
            self._emit(text, reasoning=False)

    def _control(self, token: str) -> None:
        if token == self._start_tag and self._mode is _Mode.ANSWER:
            # Answer text that writes the start tag (not at the start: `_scan_start`) is
            # a model writing about the tags; the end tag after it is text too (found by a
            # probe: "Wrap the notes in <think> and </think> tags." lost its start).
            self._reasoned = True
            self._literal(token, False)
        elif token in (_MARKER, self._end_tag):
            self._boundary()
        elif token in ("<|start|>", "<|channel|>"):
            self._harmony = True
            self._mode = _Mode.HEADER
            self._header = ""  # the channel name follows the last <|channel|>
        elif token == "<|constrain|>" and self._mode is _Mode.HEADER:
            self._header += " "
        elif token == "<|message|>" and self._mode is _Mode.HEADER:
            words = self._header.split()
            if (words[0] if words else "") in _HARMONY_ANSWER_CHANNELS:
                self._boundary()
                self._final = True
            else:
                self._enter(_Mode.HREASON)
        # <|end|>, <|return|>, <|call|>, stray <|message|>/<|constrain|>: control
        # text with no effect on which side the following text belongs to.

    # -- state changes ----------------------------------------------------------

    def _enter(self, mode: _Mode) -> None:
        """Reasoning starts: any answer so far was reasoning after all."""
        self._retract()
        self._mode = mode
        self._final = False
        self.in_reasoning = True
        self._reasoned = True

    def _boundary(self) -> None:
        """Reasoning ends: the answer starts after this point."""
        self._retract()
        self._boundaries += 1
        self._final = False
        self._answer_open = True
        self._mode = _Mode.ANSWER
        self._strip_leading = True
        self.in_reasoning = False
        self._reasoned = True

    def _retract(self) -> None:
        if self._answer:
            # Every piece not handed out yet (`_out`) was reasoning or is this answer: it
            # goes out as reasoning. Only text handed out before cannot be taken back.
            held_back = sum(len(chunk.text) for chunk in self._out if not chunk.reasoning)
            if sum(map(len, self._answer)) > held_back:
                self.retracted = True  # some of it was handed out as answer
            pending = "".join(chunk.text for chunk in self._out)
            self._out = [ReplyChunk(pending, True)] if pending else []
            self._reasoning.extend(self._answer)
            self._answer.clear()
            self.retractions += 1
        # Tokens counted as answer with no answer text to show for them were held back (the
        # start of a tag cut across fragments) or were whitespace: reasoning too.
        self.reasoning_tokens += self._answer_tokens
        self._answer_tokens = 0

    def _flush_hold(self) -> None:
        held, self._hold = self._hold, ""
        if self._final and held.startswith(_HARMONY_CLOSERS):
            held = held[held.index("|>") + 2 :]  # the final message's closing token
        if self._mode is _Mode.START:
            self._mode = _Mode.ANSWER
        self._literal(held, structural=False)

    def _flush_before_reasoning(self) -> None:
        if self._mode is _Mode.START and not self._hold.strip():
            self._hold = ""  # whitespace before the reasoning is no answer
        self._flush_hold()

    def _emit(self, text: str, *, reasoning: bool) -> None:
        (self._reasoning if reasoning else self._answer).append(text)
        if self._out and self._out[-1].reasoning == reasoning:
            self._out[-1] = ReplyChunk(self._out[-1].text + text, reasoning)
        else:
            self._out.append(ReplyChunk(text, reasoning))

    def _take(self) -> list[ReplyChunk]:
        out, self._out = self._out, []
        return out


def _first(token: str) -> str:
    return _MARKER_HEAD[0] if token == _MARKER else token[0]


class _Tokens(NamedTuple):
    """Control tokens, and a pattern matching any of their first characters."""

    tokens: tuple[str, ...]
    first: re.Pattern[str]

    @classmethod
    def of(cls, tokens: tuple[str, ...]) -> _Tokens:
        firsts = "".join(sorted({_first(t) for t in tokens}))
        return cls(tokens, re.compile(f"[{re.escape(firsts)}]"))


class _TokenSets(NamedTuple):
    """The control tokens looked for in each state of a `ReasoningSplitter`."""

    think: _Tokens  # inside an untyped <think> block
    untyped_open: _Tokens  # an untyped reply that has not reasoned, before its answer text
    untyped: _Tokens  # the same, once answer text came
    answer_open: _Tokens  # after reasoning, before the answer text
    answer: _Tokens  # the answer text of a reply that is not Harmony
    harmony: _Tokens  # reasoning and Harmony headers
    final: _Tokens  # a Harmony final message: only its closing tokens (and the marker)


_HARMONY_HEADERS = ("<|start|>", "<|channel|>")
_HARMONY_CLOSERS = ("<|end|>", "<|return|>", "<|call|>")
_HARMONY_NEW = "<|start|>"  # after a closer: the closer ends the final message


@functools.lru_cache(maxsize=16)
def _mode_tokens(start_tag: str, end_tag: str) -> _TokenSets:
    """Return the control tokens of each state, for a reply with these think tags."""
    think = _Tokens.of((_MARKER, end_tag))
    return _TokenSets(
        think=think,
        # A start tag here is a mention, after which the end tag is one too (`_control`).
        untyped_open=_Tokens.of((_MARKER, start_tag, end_tag, *_HARMONY_HEADERS)),
        untyped=_Tokens.of((_MARKER, start_tag, end_tag)),
        answer_open=_Tokens.of((_MARKER, *_HARMONY_HEADERS)),
        answer=_Tokens.of((_MARKER,)),
        harmony=_Tokens.of((_MARKER, *HARMONY_TOKENS)),
        final=_Tokens.of((_MARKER, *_HARMONY_CLOSERS)),
    )


def _find(buf: str, pos: int, tokens: tuple[str, ...]) -> tuple[int, int, str] | None:
    """Find the earliest control token in ``buf[pos:]``: (start, end, token)."""
    best: tuple[int, int, str] | None = None
    for token in tokens:
        if token == _MARKER:
            match = _MARKER_RE.search(buf, pos)
            found = (match.start(), match.end(), _MARKER) if match else None
        else:
            at = buf.find(token, pos)
            found = (at, at + len(token), token) if at >= 0 else None
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    return best


def _could_become(tail: str, token: str) -> bool:
    """Tell whether ``tail`` is a proper beginning of ``token``.

    Hand-written: no library answers "could this text still grow into a match"
    for a stream of text.
    """
    if token != _MARKER:
        return len(tail) < len(token) and token.startswith(tail)
    if len(tail) <= len(_MARKER_HEAD):
        return _MARKER_HEAD.startswith(tail)
    return tail.startswith(_MARKER_HEAD) and bool(
        _MARKER_TAIL_RE.fullmatch(tail, len(_MARKER_HEAD))
    )


def _held_from(buf: str, pos: int, tokens: tuple[str, ...]) -> int:
    """Where the longest tail of ``buf[pos:]`` that may become a token begins."""
    longest = max(_MARKER_MAX if t == _MARKER else len(t) for t in tokens)
    for start in range(max(pos, len(buf) - longest), len(buf)):
        tail = buf[start:]
        if any(_could_become(tail, token) for token in tokens):
            return start
    return len(buf)


_BUDGET_STOPS = {
    "maxPredictedTokensReached": "max_tokens",
    "contextLengthReached": "the model's context length (LM Studio's load setting)",
}


def plain_reply(text: str, start_tag: str, end_tag: str) -> bool:
    """Tell whether ``text``, a whole untyped reply, holds no sign of reasoning.

    Then a `ReasoningSplitter` with these tags, fed the reply in any pieces, finds all of
    it answer, and no reasoning tokens: a whole reply read at once can be taken as it is,
    without a splitter. The check is substring searches only.

    Parameters
    ----------
    text
        The joined text of every fragment of the reply, all typed ``none``.
    start_tag, end_tag
        The reasoning tags the splitter would recognise.

    Returns
    -------
    bool
        ``False`` if the reply could open with the start tag or Harmony control text, or
        if it holds the end tag or the synthetic marker.
    """
    stripped = text.lstrip()
    head = stripped[:1]
    return not (
        (head and (start_tag.lstrip() or start_tag).startswith(head))
        or end_tag in text
        or _MARKER_HEAD in text
        or stripped.startswith("<|")  # a Harmony header opens only a reply's answer
    )


def reply_problem(
    answer: str,
    reasoning: str,
    stats: ReplyStats,
    *,
    structured: bool,
    in_reasoning: bool = False,
    reasoned: bool = False,
) -> ParseError | None:
    """Return the error a finished reply of a reasoning model deserves, if any.

    Parameters
    ----------
    answer
        The answer text (`ReasoningSplitter.answer`).
    reasoning
        The reasoning text (`ReasoningSplitter.reasoning`).
    stats
        The reply's stats.
    structured
        Whether the answer was to be a JSON document (only changes the wording: a
        grammar-mode answer is not called JSON).
    in_reasoning
        Whether the reply ended inside reasoning (`ReasoningSplitter.in_reasoning`) or
        inside a Harmony header (`ReasoningSplitter.in_header`): a reply cut just after its
        start tag, or after whitespace, or in ``<|channel|>analysis``, has reasoned too.
    reasoned
        Whether the reply held reasoning at all (`ReasoningSplitter.reasoned`): an empty
        think block (what Qwen3 writes with ``/no_think``) or Harmony analysis message
        followed by no answer is an empty answer, not an empty JSON document.

    Returns
    -------
    ParseError | None
        `ReasoningTruncatedError` when the token budget ran out before any answer
        was written, `EmptyAnswerError` when the model reasoned and then wrote no
        answer, else ``None``. Replies without reasoning are never judged here.
    """
    if answer.strip() or not (reasoning.strip() or in_reasoning or reasoned):
        return None
    stop = stats.stop_reason
    what = "JSON answer" if structured else "answer"
    counts = _counts(stats)
    found: dict[str, Any] = {
        "raw": answer,
        "stop_reason": stop,
        "reasoning": reasoning,
        "reasoning_tokens": stats.reasoning_tokens,
        "predicted_tokens": stats.predicted_tokens,
    }
    if stop in _BUDGET_STOPS:
        limit = _BUDGET_STOPS[stop]
        spent = stats.predicted_tokens
        if stop == "contextLengthReached":  # the context holds the prompt too
            spent = (spent or 0) + (stats.prompt_tokens or 0) if spent is not None else None
            suggestion = f" (above {spent}, the tokens it held)" if spent else ""
        else:
            suggestion = f" (for example to {max(4 * spent, 1024)})" if spent else ""
        return ReasoningTruncatedError(
            f"The token budget was spent on reasoning: the reply stopped ({stop}) before the "
            f"model began its {what} ({counts}). Raise {limit}{suggestion}, or use a model "
            # Not "turn thinking off": the Python SDK cannot send that setting (a probe).
            "(or an LM Studio model setting) without thinking; the reasoning so far is in "
            ".reasoning",
            errors=[f"stopped inside the reasoning ({stop})"],
            **found,
        )
    if stop == "stopStringFound" and in_reasoning:
        return EmptyAnswerError(
            f"A stop string ended the reply inside the reasoning, before the model began "
            f"its {what} ({counts}). Drop it from stop=, or pick one the reasoning cannot "
            "hold; the reasoning so far is in .reasoning",
            errors=["stopped inside the reasoning (stopStringFound)"],
            **found,
        )
    if stop in (None, "eosFound", "stopStringFound"):
        # A stop string ended it: no budget to raise (found by a probe), the string to drop.
        way = (
            "Drop the stop string that ended it from stop=, ask for the answer explicitly"
            if stop == "stopStringFound"
            # The model ended the reply itself: no budget ran out (found by a probe).
            else "Ask for the answer explicitly in the prompt"
            if stop == "eosFound"
            else "Ask for the answer explicitly in the prompt, raise max_tokens"
        )
        return EmptyAnswerError(
            f"The model reasoned and then wrote an empty {what} (stop reason {stop}; "
            f"{counts}). {way}, "
            "or use a model or setting without thinking; the reasoning is in .reasoning",
            errors=["empty answer after reasoning"],
            **found,
        )
    return None  # userStopped, failed, toolCalls...: the caller's own errors apply


def _counts(stats: ReplyStats) -> str:
    parts: list[Any] = []
    if stats.predicted_tokens is not None:
        parts.append(f"{stats.predicted_tokens} tokens predicted")
    if stats.reasoning_tokens is not None:
        parts.append(f"{stats.reasoning_tokens} of them reasoning")
    return ", ".join(parts) or "token counts not reported"
