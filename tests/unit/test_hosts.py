"""`host_problem` (what is wrong with a HOST:PORT) and `unresolved` (a name with no address)."""

from __future__ import annotations

import socket

import pytest

from outlines_lmstudio._discovery import unresolved
from outlines_lmstudio._hosts import host_problem


@pytest.mark.parametrize("host", ["localhost:1", "localhost:65535", "[::1]:1234", "a:01234"])
def test_every_port_from_1_to_65535_is_taken(host: str) -> None:
    assert host_problem(host, "e.g.") is None


@pytest.mark.parametrize(("host", "port"), [("localhost:0", 0), ("localhost:65536", 65536)])
def test_a_port_outside_1_to_65535_is_named(host: str, port: int) -> None:
    problem = host_problem(host, "e.g. x")
    assert problem == f": {port} is not a port: use 1 to 65535, e.g. x."


def test_an_address_in_brackets_is_looked_up_without_them() -> None:
    """Found by mutation testing: with its brackets kept, "[::1]" was said not to resolve,
    and a user with LM Studio stopped was told to check the spelling."""
    assert unresolved("[::1]:1") is None
    assert unresolved("127.0.0.1:1") is None


def test_a_resolver_that_cannot_be_asked_claims_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by mutation testing: only a "no such name" answer is said to be one; a resolver
    that is down (offline, EAI_AGAIN) says nothing of the name."""

    def down(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", down)
    assert unresolved("lmstudio-host.example:1234") is None

    def no_such_name(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    assert unresolved("lmstudio-host.example:1234") == (
        "the host name 'lmstudio-host.example' does not resolve (Name or service not known)"
    )
