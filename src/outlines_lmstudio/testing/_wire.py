"""Wire primitives shared by every layer: channels, error replies and the peer interface.

The emulator's modules depend in one direction only::

    _server (LMStudioEmulator: lifecycle, public controls)
      -> _protocol (one websocket: authentication, envelopes, dispatch, faults)
        -> _endpoints (RPC and channel handlers)  -> _predict (the predict channels)
          -> the engine that writes the text (_sampler, _gbnf)
    and below all of them: _wire (this module), _state, _lookup, _catalogue, _records, _faults.

Handlers never import the protocol or server modules: they talk to the socket through
`Peer`, the small interface `_protocol.Connection` implements, and to the shared state
through `_state.EmulatorState`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from outlines_lmstudio.testing._state import EmulatorState

__all__ = ["Channel", "ConnectionDropped", "Peer", "RequestError", "server_error"]


class RequestError(Exception):
    """Raised by a handler to answer with ``rpcError`` / ``channelError``."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title"))
        self.error = error


def server_error(title: str, **extra: Any) -> RequestError:
    """Build a `RequestError` with a generic (``LMStudioServerError``) error object."""
    return RequestError({"title": title, **extra})


class ConnectionDropped(Exception):
    """The connection was aborted on purpose (a ``drop`` fault)."""


@dataclass
class Channel:
    """Server-side state of one open channel."""

    id: int
    endpoint: str
    cancelled: bool = False
    finished: bool = False
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)


class Peer(Protocol):
    """What a handler may do with the socket that sent its request."""

    emu: EmulatorState
    namespace: str
    client_id: str

    async def channel_send(self, channel: Channel, message: dict[str, Any]) -> None:
        """Send one ``channelSend`` packet on ``channel``."""

    async def channel_close(self, channel: Channel) -> None:
        """End ``channel`` normally."""

    async def channel_error(self, channel: Channel, error: dict[str, Any]) -> None:
        """End ``channel`` with an error."""

    async def pause(self) -> None:
        """Let the socket's reader run (a cancel may be waiting), even at zero latency."""

    def abort(self) -> None:
        """Close the TCP connection abruptly."""
