"""`from_lmstudio`: the model class for a client.

`LMStudio` (`_sync.py`) and `AsyncLMStudio` (`_async.py`) subclass Outlines'
own LM Studio models so that ``outlines.Generator`` (which dispatches on a
closed set of Outlines classes) accepts them, and override every method
Outlines calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, overload

import lmstudio as lms

from ._api import OPTIONS, check_options
from ._common import for_a_stand_in
from ._sync import LMStudio
from .errors import InvalidClientError

if TYPE_CHECKING:
    from ._async import AsyncLMStudio

__all__ = ["LMStudio", "OPTIONS", "from_lmstudio"]


# The options by name, for type checkers (a misspelt one is caught before it runs; found
# by a probe); the function itself takes **options and names an unknown one at run time.
@overload
def from_lmstudio(
    client: lms.Client,
    model_name: str | None = None,
    *,
    max_concurrency: int = ...,
    timeout: float | None = ...,
    connect_timeout: float | None = ...,
    read_timeout: float | None = ...,
    grammar: bool = ...,
    strict_schema: bool = ...,
) -> LMStudio: ...
@overload
def from_lmstudio(
    client: lms.AsyncClient,
    model_name: str | None = None,
    *,
    max_concurrency: int = ...,
    timeout: float | None = ...,
    connect_timeout: float | None = ...,
    read_timeout: float | None = ...,
    grammar: bool = ...,
    strict_schema: bool = ...,
) -> AsyncLMStudio: ...
def from_lmstudio(
    client: lms.Client | lms.AsyncClient, model_name: str | None = None, **options: Any
) -> LMStudio | AsyncLMStudio:
    """Create an Outlines model from an ``lmstudio`` client.

    Parameters
    ----------
    client
        An ``lmstudio.Client`` (gives `LMStudio`) or ``lmstudio.AsyncClient``
        (gives `AsyncLMStudio`).
    model_name
        The model key, or ``None`` to use the model LM Studio has loaded.
    **options
        ``max_concurrency``: most predictions ``batch`` runs at once (default 4).
        ``timeout``: seconds for a whole call (a complete answer, or a whole stream);
        default ``None``, no limit of this kind; each call can pass its own.
        ``connect_timeout``: seconds to open a websocket to LM Studio and authenticate
        (default 10; ``None``: no bound).
        ``read_timeout``: seconds to wait for any message from LM Studio during a call
        (default 60, the sync SDK's own bound, ``lmstudio.set_sync_api_timeout``, which
        still cuts a sync call's waits when it is the shorter); prompt-processing progress
        counts as a message.
        ``grammar``: send ``Regex``/``CFG``/DSL terms as GBNF grammars (GGUF models only).
        ``strict_schema``: also refuse, before sending, JSON-schema keywords that either
        of LM Studio's engines accepts but does not enforce (default ``False``).

    Returns
    -------
    LMStudio | AsyncLMStudio
        A model usable with ``outlines.Generator``.

    Raises
    ------
    InvalidClientError
        (a ``TypeError`` and a ``ValueError``) If ``client`` is neither an
        ``lmstudio.Client`` nor an ``lmstudio.AsyncClient``.
    InvalidInferenceArgumentError
        (a ``TypeError``) If an option is unknown (the message lists those it takes), an
        option has the wrong type (``timeout="5"``, ``grammar="no"``,
        ``max_concurrency=2.5``), or ``model_name`` is not a non-empty string (or has
        whitespace around it).
    InvalidInferenceValueError
        (a ``ValueError``) If an option is out of range: ``max_concurrency`` below 1, a
        timeout that is not above 0, not finite or above 10^9 seconds.
    """
    check_options("from_lmstudio", options)
    if isinstance(client, lms.Client):
        return LMStudio(client, model_name, **options)
    if isinstance(client, lms.AsyncClient):
        # Imported here: a sync program never loads the async front (import time).
        from ._async import AsyncLMStudio

        return AsyncLMStudio(client, model_name, **options)
    raise InvalidClientError(
        "from_lmstudio needs an lmstudio.Client or an lmstudio.AsyncClient, "
        f"got {type(client).__name__}. Create one with lmstudio.Client('localhost:1234')."
        + for_a_stand_in(client)
    )
