"""Fault injection: errors, dropped sockets, hangs, delays and vanishing models."""

from __future__ import annotations

import difflib
import math
import threading
from dataclasses import dataclass
from typing import Literal

from outlines_lmstudio.testing._surface import CHANNELS, RPCS

__all__ = ["Fault", "FaultBook"]

FaultKind = Literal["error", "drop", "hang", "delay", "unload"]
_KINDS = ("error", "drop", "hang", "delay", "unload")
_ENDPOINTS = frozenset().union(*RPCS.values(), *CHANNELS.values())
_NAME_A_MODEL = frozenset().union(
    *(group[n] for group in (RPCS, CHANNELS) for n in ("llm", "embedding"))
) - {"listLoaded"}
"""The endpoints whose requests name a model: only these can meet ``model=`` or unload one."""


@dataclass
class Fault:
    """A failure the emulator injects into matching requests.

    Parameters
    ----------
    endpoint
        The endpoint it applies to (``"predict"``, ``"getOrLoad"``,
        ``"embedString"``, ``"uploadFileBase64"``, ...).
    kind
        ``"error"``: answer with ``rpcError`` / ``channelError`` (title = ``message``).
        ``"drop"``: abort the client's socket (TCP close, no close frame).
        ``"hang"``: never answer this request, not even its cancel, until the
        client's socket closes (other requests are still served). A prediction hung
        after fragments keeps its parallel slot meanwhile, so as many hangs as the
        model has slots make later predictions for that model wait, the way a stuck
        LM Studio would.
        ``"delay"``: wait ``seconds``, then answer normally; a prediction cancelled
        meanwhile ends ``userStopped`` at once (and takes no scripted reply).
        ``"unload"``: unload the model just before serving the request, so it
        fails the way a model unloaded in the LM Studio UI does.
    model
        Only requests for this model key or instance identifier match.
    after_fragments
        For ``predict``: send this many fragments before the fault strikes (not for
        ``unload``, which strikes before the request is served).
    seconds
        The wait of a ``delay`` fault (only).
    times
        How many matching requests it hits before it is spent.
    message
        The error title of an ``error`` fault.
    """

    endpoint: str = "predict"
    kind: FaultKind = "error"
    model: str | None = None
    after_fragments: int = 0
    seconds: float = 0.0
    times: int = 1
    message: str = "Injected failure"

    def __post_init__(self) -> None:
        if self.endpoint not in _ENDPOINTS:
            close = difflib.get_close_matches(str(self.endpoint), sorted(_ENDPOINTS), n=1)
            raise ValueError(  # found by a probe: it named a private module for the list
                f"Fault endpoint {self.endpoint!r:.80} is no LM Studio endpoint, so no request "
                "would ever match it"
                + (f"; did you mean {close[0]!r}?" if close else ".")
                + f" The endpoints: {', '.join(sorted(_ENDPOINTS))}."
            )
        if self.kind not in _KINDS:
            raise ValueError(f"Fault kind must be one of {_KINDS}, not {self.kind!r}")
        for name, least in (("times", 1), ("after_fragments", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Fault.{name} must be an integer >= {least}, not {value!r}")
        seconds = self.seconds
        if isinstance(seconds, bool) or not (
            isinstance(seconds, int | float) and 0 <= seconds < math.inf
        ):
            # An infinite delay would hang the request: that is kind="hang".
            raise ValueError(
                f"Fault.seconds must be a finite number of seconds >= 0, not {seconds!r} "
                '(for a request that never gets an answer, use kind="hang")'
            )
        if not isinstance(self.message, str):
            raise ValueError(f"Fault.message must be a string, not {self.message!r}")
        if self.model is not None and not isinstance(self.model, str):
            raise TypeError(
                "Fault.model must be a string (a model key, path or alias, or an instance "
                f"identifier), not {type(self.model).__name__} ({self.model!r:.60})"
            )
        if self.endpoint not in _NAME_A_MODEL and (self.model is not None or self.kind == "unload"):
            # Found by a probe: accepted, then spent on nothing (unload) or never struck.
            if self.kind == "unload":
                what = "an unload fault would unload nothing"
            else:
                what = "a fault for one model would never strike"
            raise ValueError(
                f"{self.endpoint!r} requests name no model, so {what}; put it on an endpoint "
                'that does ("predict", "getOrLoad", "getModelInfo", "embedString", ...)'
            )
        if self.after_fragments and self.endpoint != "predict":
            raise ValueError(
                "Fault.after_fragments applies to predict only (the one endpoint that "
                f"streams fragments), not to {self.endpoint!r}"
            )
        if self.after_fragments and self.kind == "unload":
            raise ValueError(
                "Fault.after_fragments does not apply to an unload fault (it unloads the "
                "model before the request is served); to unload mid-stream, call "
                "emu.unload(identifier) from a reply function or your test"
            )
        if self.seconds and self.kind != "delay":
            raise ValueError(
                f'Fault.seconds is the wait of kind="delay"; a fault of kind {self.kind!r} has none'
            )


class FaultBook:
    """The armed faults, consumed thread-safely as requests match them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[tuple[Fault, str | None, list[int]]] = []

    def add(self, fault: Fault, model: str | None = None) -> None:
        """Arm a fault; ``model`` is the name it matches (``fault.model`` resolved)."""
        with self._lock:
            self._faults.append((fault, model, [fault.times]))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def take(self, endpoint: str, models: tuple[str, ...]) -> Fault | None:
        """Return (and consume one use of) the first fault matching a request.

        Parameters
        ----------
        endpoint
            The request's endpoint.
        models
            Names the request refers to (identifier, model key); empty when
            the endpoint is not about a model.
        """
        with self._lock:
            for i, (fault, model, left) in enumerate(self._faults):
                if fault.endpoint != endpoint:
                    continue
                if model is not None and model not in models:
                    continue
                left[0] -= 1
                if left[0] <= 0:
                    del self._faults[i]
                return fault
        return None
