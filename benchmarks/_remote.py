"""The emulator in its own process, driven over a pipe.

The client side (ours or the SDK by hand) is then alone in the benchmark's
process, so ``time.process_time()`` counts exactly the client's CPU time: the
calling thread, the SDK's background threads and our own, and nothing of the
server's. Replies are scripted in the child from a small picklable spec, so
every request gets a distinct reply of a known number of fragments.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

__all__ = ["RemoteEmulator", "Script", "ServerStats"]

ScriptKind = Literal["person", "roster", "vision", "fixed", "engine"]


@dataclass(frozen=True)
class Script:
    """How the child answers every prediction.

    Attributes
    ----------
    kind
        ``"person"``: `benchmarks._common.person_reply` for the prompt's number, in
        ``fragments`` fragments; ``"vision"``: a short sentence with the number of
        images received and the prompt's number; ``"fixed"``: ``text``;
        ``"engine"``: no script, the model's engine writes the reply.
    fragments
        Fragments of a ``"person"`` reply.
    text
        The ``"fixed"`` reply.
    """

    kind: ScriptKind
    fragments: int = 5
    text: str = ""


@dataclass(frozen=True)
class ServerStats:
    """What the emulator recorded since its last reset."""

    predictions: int
    uploads: int
    fragment_counts: list[int]
    """Sorted distinct fragment counts of the finished predictions."""
    peak_concurrency: int
    upload_sizes: list[int]
    stop_reasons: list[str | None]
    """Of every prediction, oldest first."""
    schema_properties: list[int]
    """Of every prediction, oldest first: the properties of its JSON schema (-1: none)."""
    message_counts: list[int]
    """Of every prediction, oldest first: the messages of its chat."""
    structured: list[str]
    """Of every prediction, oldest first: its structured setting (``llm.prediction.structured``,
    the ``response_format`` on the wire) as JSON, keys in the order sent, ``""`` if none."""
    histories: list[list[tuple[str, str]]]
    """The distinct histories sent, in order of first arrival: (role, text) of each message.

    Distinct, not one per prediction: a 1,001-message history sent 480 times would be a
    large pipe load for what is, when both sides agree, one history."""


def _properties(structured: dict[str, Any] | None) -> int:
    schema = (structured or {}).get("jsonSchema")
    if not isinstance(schema, dict):
        return -1
    return len(schema.get("properties") or {})


def _canonical(structured: dict[str, Any] | None) -> str:
    # Keys in the order sent: an engine writes the properties in the schema's order, so
    # the order is part of what is compared (found by a probe: sorted, it was not).
    return "" if structured is None else json.dumps(structured)


def _histories(messages: list[list[dict[str, Any]]]) -> list[list[tuple[str, str]]]:
    from outlines_lmstudio.testing._records import message_text

    seen: dict[tuple[tuple[str, str], ...], None] = {}
    for history in messages:
        seen.setdefault(tuple((str(m.get("role")), message_text(m)) for m in history))
    return [list(history) for history in seen]


def _last_text(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages[-1]) if messages else ""


def _serve(
    conn: Connection, slots: int, gguf: tuple[str, str] | None
) -> None:  # pragma: no cover - runs in the child
    from benchmarks._common import person_reply, prompt_id, roster_reply
    from outlines_lmstudio.testing import (
        EmulatedModel,
        LMStudioEmulator,
        Prediction,
        default_models,
    )

    models = default_models()
    if gguf is not None:
        models.append(EmulatedModel(gguf[0], gguf=gguf[1]))
    with LMStudioEmulator(models, slots=slots) as emu:
        conn.send(emu.api_host)
        while True:
            try:
                command, args = conn.recv()
            except EOFError:
                return
            if command == "stop":
                conn.send(None)
                return
            if command == "reset":
                emu.reset()
                emu.token_latency = args["token_latency"]
                emu.prompt_latency = 0.0
                script: Script = args["script"]

                def reply(p: Prediction, script: Script = script) -> str:
                    if script.kind == "fixed":
                        return script.text
                    number = prompt_id(_last_text(p.messages))
                    if script.kind == "vision":
                        return f"I see {len(p.images)} image(s) for {number}."
                    if script.kind == "roster":
                        return roster_reply(number, script.fragments)
                    return person_reply(number, script.fragments)

                if script.kind != "engine":
                    for model in args["models"]:
                        emu.script(model, reply)
                conn.send(None)
            elif command == "stats":
                done = [p for p in emu.predictions if p.done]
                conn.send(
                    ServerStats(
                        predictions=len(emu.predictions),
                        uploads=len(emu.uploads),
                        fragment_counts=sorted({len(p.fragments) for p in done}),
                        peak_concurrency=emu.peak_concurrency(),
                        upload_sizes=[len(u.data) for u in emu.uploads],
                        stop_reasons=[p.stop_reason for p in emu.predictions],
                        schema_properties=[_properties(p.structured) for p in emu.predictions],
                        message_counts=[len(p.messages) for p in emu.predictions],
                        structured=[_canonical(p.structured) for p in emu.predictions],
                        histories=_histories([p.messages for p in emu.predictions]),
                    )
                )
            else:
                conn.send(ValueError(f"unknown command {command!r}"))


class RemoteEmulator:
    """An `LMStudioEmulator` in a child process (``spawn``), as a context manager.

    Parameters
    ----------
    slots
        Predictions served at once per model (LM Studio's default is 4).
    gguf
        ``(model key, path)``: also serve this GGUF file with the llama.cpp engine.
    """

    def __init__(self, slots: int = 4, gguf: tuple[str, str] | None = None) -> None:
        self.slots = slots
        self.gguf = gguf
        self._conn: Connection | None = None
        self._process: Any = None
        self.api_host = ""

    def __enter__(self) -> RemoteEmulator:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(theirs, self.slots, self.gguf),
            name="lmstudio-emulator",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._conn = ours
        if not ours.poll(60):
            self.__exit__(None, None, None)
            raise TimeoutError("The emulator process did not start within 60 s")
        self.api_host = ours.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                self._call("stop")
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(15)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
            self._process = None

    def _call(self, command: str, **args: Any) -> Any:
        if self._conn is None:
            raise RuntimeError("The emulator process is not running")
        self._conn.send((command, args))
        if not self._conn.poll(120):
            raise TimeoutError(f"The emulator process did not answer {command!r} within 120 s")
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def reset(
        self,
        script: Script,
        models: tuple[str, ...] = (),
        token_latency: float = 0.0,
    ) -> None:
        """Clear the records; answer ``models`` (by key) with ``script``."""
        from benchmarks._common import TEXT_MODEL

        self._call(
            "reset", script=script, models=models or (TEXT_MODEL,), token_latency=token_latency
        )

    def stats(self) -> ServerStats:
        """What the emulator recorded since the last `reset`."""
        stats: ServerStats = self._call("stats")
        return stats
