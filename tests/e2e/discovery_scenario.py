"""Default-port discovery, as a user meets it: run by ``test_discovery.py`` in a private network.

``python discovery_scenario.py found PORT`` starts the emulator on ``PORT`` (one of LM
Studio's default ports) and uses ``lms.Client()`` / ``lms.AsyncClient()`` with no host,
never entered by us. ``python discovery_scenario.py nothing`` makes the same calls with
nothing listening, ``other PORT`` with a web server (not LM Studio) on ``PORT``, ``behind
PORT1 PORT2 [KIND]`` with that server (or one of ``KIND``, see ``demo``) on ``PORT1`` and
the emulator on ``PORT2`` (the CLI too),
``other PORT silent`` with a server that never answers, ``greeting PORT`` with one that
answers LM Studio's greeting and closes its websocket, ``stream PORT1 PORT2`` as ``behind``
with a server that streams without end on ``PORT1``, ``concurrent PORT1 PORT2`` six first
calls at once with that server on ``PORT1``, then one with the emulator on ``PORT2`` too;
``slow-search PORT1 PORT2`` an async call with ``connect_timeout=3`` and that server on both;
``cancelled-search PORT1 PORT2 PORT3`` async first calls cancelled during such a search, with
the emulator on ``PORT3`` (see `first_call_cancelled`); ``dropping PORT1 PORT2 PORT3`` an async
call with ``connect_timeout=1.9``, ports that drop connections on ``PORT1`` and ``PORT2``
and the emulator on ``PORT3``.
``demo KIND PORT1 PORT2`` runs the demo (``examples/extract.py``) with a server of that
kind (``html``, ``stream``, ``silent``) on ``PORT1`` and the emulator on ``PORT2``.
Prints one JSON object with what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lmstudio as lms
from other_server import (  # type: ignore[import-not-found]  # a script's folder
    serving_fake_lmstudio,
    serving_html,
    serving_silence,
    serving_stream,
)
from pydantic import BaseModel

from outlines_lmstudio import LMStudioConnectionError, from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

MODEL = "qwen2.5-7b-instruct"
DEMO = Path(__file__).parents[2] / "examples" / "extract.py"
OTHER: dict[str, Callable[[int], contextlib.AbstractContextManager[int]]] = {
    "html": serving_html,
    "404": lambda port: serving_html(port, status=404),
    "stream": serving_stream,
    "404 stream": lambda port: serving_stream(port, status=404),
    "silent": serving_silence,
}


class Person(BaseModel):
    name: str
    age: int


def sync_call() -> dict[str, Any]:
    client = lms.Client()  # no host, no `with`: as in the README
    try:
        model = from_lmstudio(client, MODEL)
        person = model.parse("John is 32", Person, max_tokens=64)
        texts = model.batch(["a", "b", "c"], max_tokens=4)  # threads share the new client
        return {"host": client.api_host, "person": person.model_dump(), "batch": len(texts)}
    except LMStudioConnectionError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    finally:
        client.close()


async def async_call(**options: Any) -> dict[str, Any]:
    model = from_lmstudio(lms.AsyncClient(), MODEL, **options)  # entered on first use
    try:
        async with model:
            person = await model.parse("Mary is 40", Person, max_tokens=64)
            return {"host": model.client.api_host, "person": person.model_dump()}
    except LMStudioConnectionError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def _outcome(call: Callable[[], Any]) -> str:
    try:
        call()
    except LMStudioConnectionError as exc:
        return str(exc)
    return "ok"


def concurrent_sync(calls: int = 6) -> dict[str, Any]:
    """``calls`` threads make their first call at once on one client with no host."""
    client = lms.Client()
    model = from_lmstudio(client, MODEL)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(calls) as pool:
            futures = [
                pool.submit(_outcome, lambda: model("Hi", max_tokens=4)) for _ in range(calls)
            ]
            outcomes = [future.result() for future in futures]
    finally:
        client.close()
    return {"outcomes": outcomes, "seconds": time.monotonic() - started}


def batch_of_16() -> dict[str, Any]:
    """A batch of 16 items, 4 at a time, on one client with no host."""
    client = lms.Client()
    started = time.monotonic()
    try:
        error = _outcome(lambda: from_lmstudio(client, MODEL, max_concurrency=4).batch(["Hi"] * 16))
    except Exception as exc:  # the batch's own error, reported
        error = f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return {"error": error, "seconds": time.monotonic() - started}


async def async_batch_of_16() -> dict[str, Any]:
    """`batch_of_16` on an ``AsyncClient`` with no host."""
    model = from_lmstudio(lms.AsyncClient(), MODEL, max_concurrency=4)
    started = time.monotonic()
    try:
        await model.batch(["Hi"] * 16)
        error = "ok"
    except Exception as exc:  # the batch's own error, reported
        error = f"{type(exc).__name__}: {exc}"
    finally:
        await model.close()
    return {"error": error, "seconds": time.monotonic() - started}


async def concurrent_async(calls: int = 6) -> dict[str, Any]:
    """``calls`` tasks make their first call at once on one ``AsyncClient`` with no host."""
    model = from_lmstudio(lms.AsyncClient(), MODEL)
    started = time.monotonic()

    async def one() -> str:
        try:
            await model("Hi", max_tokens=4)
        except LMStudioConnectionError as exc:
            return str(exc)
        return "ok"

    outcomes = await asyncio.gather(*(one() for _ in range(calls)))
    await model.close()
    return {"outcomes": outcomes, "seconds": time.monotonic() - started}


async def first_call_cancelled(*, close: bool) -> dict[str, Any]:
    """A first call on an ``AsyncClient`` with no host cancelled while the ports are searched;
    then, with ``close``, the model closed and called again (it searches again)."""
    model = from_lmstudio(lms.AsyncClient(), MODEL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(model("Hi", max_tokens=4), 0.3)
    if not close:
        return {}
    started = time.monotonic()
    await model.close()
    result: dict[str, Any] = {"close_seconds": time.monotonic() - started}
    try:
        await model("Hi", max_tokens=4)
    except LMStudioConnectionError as exc:  # LM Studio is past other servers: named
        result["again"] = str(exc)
    finally:
        await model.close()
    return result


@contextlib.contextmanager
def dropping_connections(port: int) -> Iterator[None]:
    """A port that drops new connections, as a firewall does: a listener that never
    accepts, its backlog full."""
    with socket.socket() as listener, contextlib.ExitStack() as stack:
        listener.bind(("127.0.0.1", port))
        listener.listen(0)
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(OSError):
                filler.connect(("127.0.0.1", port))
        yield


def run(command: list[str]) -> dict[str, Any]:
    """Run ``command`` without LMSTUDIO_HOST; return its status, output and seconds."""
    env = {k: v for k, v in os.environ.items() if k != "LMSTUDIO_HOST"}
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    return {
        "status": done.returncode,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    if sys.argv[1] == "demo":
        ports = [int(p) for p in sys.argv[3:5]]
        with OTHER[sys.argv[2]](ports[0]), LMStudioEmulator(port=ports[1]):
            result: dict[str, Any] = run([sys.executable, str(DEMO)])
    elif sys.argv[1] == "stream":
        from outlines_lmstudio._discovery import search_default_ports

        ports = [int(p) for p in sys.argv[2:4]]
        with serving_stream(ports[0]), LMStudioEmulator(port=ports[1]):
            started = time.monotonic()
            found, skipped = search_default_ports()
            result = {
                "found": found,
                "other": type(skipped[0][1]).__name__ if skipped else "NoneType",
                "seconds": time.monotonic() - started,
                "sync": sync_call(),
                "async": asyncio.run(async_call()),
            }
            command = [sys.executable, "-m", "outlines_lmstudio.cli", "generate", "-m", MODEL]
            result["cli"] = run([*command, "--max-tokens", "4", "Hi"])
    elif sys.argv[1] == "concurrent":  # 6 first calls at once, a server that streams on PORT1
        ports = [int(p) for p in sys.argv[2:4]]
        with serving_stream(ports[0]):
            result = {"sync": concurrent_sync(), "async": asyncio.run(concurrent_async())}
            result["batch"] = batch_of_16()
            result["async_batch"] = asyncio.run(async_batch_of_16())
            with LMStudioEmulator(port=ports[1]):  # started later: a new call searches again
                result["later"] = concurrent_sync(calls=1)
    elif sys.argv[1] == "cancelled-search":  # servers that stream on PORT1 and PORT2, ours on 3
        ports = [int(p) for p in sys.argv[2:5]]
        with serving_stream(ports[0]), serving_stream(ports[1]), LMStudioEmulator(port=ports[2]):
            started = time.monotonic()
            asyncio.run(first_call_cancelled(close=False))
            result = {"left_run_seconds": time.monotonic() - started}
            result.update(asyncio.run(first_call_cancelled(close=True)))
    elif sys.argv[1] == "dropping":  # PORT1 and PORT2 drop new connections (backlogs full)
        ports = [int(p) for p in sys.argv[2:5]]
        with (
            dropping_connections(ports[0]),
            dropping_connections(ports[1]),
            LMStudioEmulator(port=ports[2]),
        ):
            result = {"async": asyncio.run(async_call(connect_timeout=1.9))}
    elif sys.argv[1] == "slow-search":  # servers that stream on PORT1 and PORT2: a 4 s search
        ports = [int(p) for p in sys.argv[2:4]]
        with serving_stream(ports[0]), serving_stream(ports[1]):
            result = {"async": asyncio.run(async_call(connect_timeout=3))}
    elif sys.argv[1] == "other":  # other PORT [KIND]: html, 404, stream or silent
        kind = sys.argv[3] if len(sys.argv) > 3 else "html"
        with OTHER[kind](int(sys.argv[2])):
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
            command = [sys.executable, "-m", "outlines_lmstudio.cli", "generate", "-m", MODEL]
            result["cli"] = run([*command, "--max-tokens", "4", "Hi"])
    elif sys.argv[1] == "others":  # others PORT1 KIND1 PORT2 KIND2: two other servers
        with OTHER[sys.argv[3]](int(sys.argv[2])), OTHER[sys.argv[5]](int(sys.argv[4])):
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
            command = [sys.executable, "-m", "outlines_lmstudio.cli", "generate", "-m", MODEL]
            result["cli"] = run([*command, "--max-tokens", "4", "Hi"])
    elif sys.argv[1] == "proxy":  # LM Studio on PORT, HTTP_PROXY pointing at a dead port
        os.environ["HTTP_PROXY"] = "http://127.0.0.1:9"
        with LMStudioEmulator(port=int(sys.argv[2])):
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
    elif sys.argv[1] == "greeting":  # LM Studio's greeting on PORT, a websocket that closes
        with serving_fake_lmstudio("close", int(sys.argv[2])):
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
    elif sys.argv[1] == "behind":  # another server on the first port, LM Studio on the next
        ports = [int(p) for p in sys.argv[2:4]]
        other = OTHER[sys.argv[4] if len(sys.argv) > 4 else "html"]
        with other(ports[0]), LMStudioEmulator(port=ports[1]):
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
            env = {k: v for k, v in os.environ.items() if k != "LMSTUDIO_HOST"}
            command = [sys.executable, "-m", "outlines_lmstudio.cli", "generate", "-m", MODEL]
            done = subprocess.run(
                [*command, "--max-tokens", "4", "Hi"],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            result["cli"] = {"status": done.returncode, "stderr": done.stderr}
    elif sys.argv[1] == "found":
        with LMStudioEmulator(port=int(sys.argv[2])) as emulator:
            result = {"sync": sync_call(), "async": asyncio.run(async_call())}
            result["predictions"] = len(emulator.predictions)
    else:
        result = {"sync": sync_call(), "async": asyncio.run(async_call())}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
