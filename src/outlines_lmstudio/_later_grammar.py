r"""A grammar-mode term's GBNF, converted in a worker thread on the async front.

Converting a regex character class (``\d``, ``\w``, a class under ``(?i)``) for the first
time scans all of Unicode with Python's ``re`` (`_grammar._charset.matched_by`): 40 to
100 ms a class on a 2-core machine, and up to a second for a pattern with several. An async
call spent that on the event loop, and every other task waited (found by a probe). So
`AsyncLMStudio._prepare` plans such a term under `converting_later`: the plan holds a
`LaterGbnf`, and the request's worker thread converts it before anything is sent, with its
images (`_async._settle`). A ``parse`` check made from that plan meanwhile waits for it too
(`LaterGbnf.then`): it is built in the same thread, from what the conversion computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from ._output import OutputPlan

__all__ = ["LaterGbnf", "converted", "converting_later", "later_gbnf", "later_requested"]

_LATER: ContextVar[bool] = ContextVar("_LATER", default=False)


@contextmanager
def converting_later() -> Iterator[None]:
    """Plan grammar-mode terms with a `LaterGbnf` (plans that are not kept: `plan_output`)."""
    token = _LATER.set(True)
    try:
        yield
    finally:
        _LATER.reset(token)


def later_requested() -> bool:
    """Whether the plan being made may leave its GBNF for later (`converting_later`)."""
    return _LATER.get()


class LaterGbnf:
    """The GBNF of a grammar-mode term, converted when `text` is first asked for.

    Parameters
    ----------
    term
        The Outlines term (``Regex``, ``CFG``, ``either(...)``...) to convert.
    """

    __slots__ = ("_text", "_then", "term")

    def __init__(self, term: object) -> None:
        self.term = term
        self._text: str | None = None
        self._then: list[Callable[[], object]] = []

    @property
    def converted(self) -> bool:
        """Whether the term was converted (and what waited for it was built)."""
        return self._text is not None

    def then(self, build: Callable[[], object]) -> None:
        """Run ``build`` once the term is converted: at once if it is."""
        if self._text is not None:
            build()
        else:
            self._then.append(build)

    def text(self) -> str:
        """Return the GBNF, converting the term (once) and building what waits for it.

        Raises
        ------
        UnsupportedGrammarError, UnsupportedOutputTypeError
            What `sendable_gbnf` raises, or a check built here (``parse``'s).
        """
        if self._text is None:
            from ._grammar._api import sendable_gbnf

            text = sendable_gbnf(self.term)
            while self._then:
                self._then[0]()
                del self._then[0]
            self._text = text
        return self._text


def later_gbnf(plan: OutputPlan) -> LaterGbnf | None:
    """Return the plan's `LaterGbnf`, if it holds one (converted or not)."""
    if plan.kind != "grammar" or plan.response_format is None:
        return None
    later = plan.response_format.get("gbnfGrammar")
    return later if isinstance(later, LaterGbnf) else None


def converted(plan: OutputPlan) -> OutputPlan:
    """Return ``plan`` with its GBNF as text, converting it if need be (blocking)."""
    later = later_gbnf(plan)
    if later is None:
        return plan
    return msgspec.structs.replace(
        plan, response_format={"type": "gbnf", "gbnfGrammar": later.text()}
    )
