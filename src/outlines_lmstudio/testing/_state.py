"""`EmulatorState`: what every socket of one emulator shares.

The catalogue, uploaded files, authenticated clients, scripts, faults, records and
prediction slots, with the settings that shape replies. `LMStudioEmulator` is an
`EmulatorState` with a server around it; handlers see only this class, so they never
import the server module (see `outlines_lmstudio.testing._wire` for the layering).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from itertools import count
from typing import TYPE_CHECKING, Any, Protocol

from outlines_lmstudio.testing._catalogue import (
    Catalogue,
    EmulatedModel,
    Instance,
    Replies,
    Reply,
    default_models,
)
from outlines_lmstudio.testing._faults import FaultBook
from outlines_lmstudio.testing._records import Prediction, Recorder, Upload
from outlines_lmstudio.testing._sampler import JsonSampler
from outlines_lmstudio.testing._scripts import Script, check_replies
from outlines_lmstudio.testing._wire import Channel

if TYPE_CHECKING:
    from outlines_lmstudio.testing._engine import Engine

__all__ = ["SETTINGS", "EmulatorState", "Peer", "check_setting"]

SETTINGS = (
    "seed",
    "slots",
    "token_latency",
    "prompt_latency",
    "unknown_endpoint",
    "validate_frames",
    "load_latency",
    "presets",
    "only_keep_last_jit_model",
)
"""The public settings a test may change on a running emulator; `reset` restores them."""

_UNKNOWN_ENDPOINT = ("error", "warning")
_STATUSES = (
    ("prompt", "processingPrompt"),
    ("generating", "generating"),
    ("embedding", "computingEmbedding"),
)
"""Busy kinds (`EmulatorState._busy`) and the processing status each gives, first wins."""


def check_setting(name: str, value: Any) -> Any:
    """Check one of the `SETTINGS`; return the value to keep (``presets`` as a frozenset).

    The same checks hold when the emulator is made and when a test changes a setting
    on a running one (``emu.slots = 1``), so a bad value fails where it was written,
    never inside the server (``slots = 0`` would make every prediction wait for ever).

    Raises
    ------
    ValueError
        If the value is of the wrong type or out of range.
    """
    if name in ("seed", "slots"):
        least = 1 if name == "slots" else -math.inf
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            bound = " of at least 1" if name == "slots" else ""
            raise ValueError(f"{name} must be an integer{bound}, not {value!r}")
    elif name in ("token_latency", "prompt_latency", "load_latency"):
        if isinstance(value, bool) or not (
            isinstance(value, int | float) and 0 <= value < math.inf
        ):
            raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    elif name == "unknown_endpoint":
        if value not in _UNKNOWN_ENDPOINT:
            raise ValueError(f"unknown_endpoint must be 'error' or 'warning', not {value!r}")
    elif name == "presets":
        if value is None:
            return None
        if not isinstance(value, Collection) or isinstance(value, str):
            raise ValueError(f"presets must be a collection of preset names or None, not {value!r}")
        if not all(isinstance(p, str) for p in value):
            raise ValueError(f"presets must be a collection of preset names or None, not {value!r}")
        return frozenset(value)
    elif name in ("validate_frames", "only_keep_last_jit_model") and not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


class EmulatorState:
    """Settings and shared state of one emulator (guarded by ``_lock``)."""

    def __init__(
        self,
        models: Sequence[EmulatedModel] | None,
        *,
        seed: int,
        slots: int,
        token_latency: float,
        prompt_latency: float,
        unknown_endpoint: str,
        validate_frames: bool,
        load_latency: float,
        presets: Collection[str] | None,
        only_keep_last_jit_model: bool = True,
        max_records: int | None = None,
    ) -> None:
        self.seed = seed
        self.slots = slots
        self.token_latency = token_latency
        self.prompt_latency = prompt_latency
        self.unknown_endpoint = unknown_endpoint
        self.validate_frames = validate_frames
        self.load_latency = load_latency
        self.presets = presets  # type: ignore[assignment]  # kept as a frozenset
        self.only_keep_last_jit_model = only_keep_last_jit_model
        self._settings = {name: getattr(self, name) for name in SETTINGS}
        self._lock = threading.RLock()
        given: object = models
        if given is not None and (
            isinstance(given, str | bytes) or not isinstance(given, Sequence)
        ):
            raise TypeError(
                f"models must be a list of EmulatedModel, not {type(models).__name__} "
                f"({models!r:.60})"
            )
        for model in models or ():
            if not isinstance(model, EmulatedModel):
                raise TypeError(
                    f"models must be a list of EmulatedModel; got {type(model).__name__} "
                    f"({model!r:.60}). Make one with EmulatedModel(**fields)."
                )
        self._catalogue = Catalogue(default_models() if models is None else models)
        self._recorder = Recorder(max_records)
        self._faults = FaultBook()
        self._sampler = JsonSampler()
        self._scripts: dict[str, Script] = {}
        self._files: dict[str, Upload] = {}
        self._file_dir: str | None = None  # uploads written out (`_file_path`)
        self._experiment_flags: set[str] = set()
        self._auth: dict[str, str] = {}
        self._client_refs: dict[str, int] = {}
        self._channel_records: dict[tuple[int, int], Prediction] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._engines: dict[str, Engine] = {}
        self._catalogue.on_unload = self._drop_idle_engines
        # Predictions generating, and the most at once, of those that arrived since the
        # last reset (`_epoch`): what `peak_concurrency` tells. The slots themselves count
        # every prediction, an earlier test's too.
        self._epoch = 0
        self._active: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._socket_ids = count(1)
        self._log_listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self._busy_counts: dict[tuple[str, str], int] = {}
        self._restore_scripts()
        self._served_from: int | None = None  # the process whose thread serves (`start`)

    presets: frozenset[str] | None

    def _in_forked_child(self) -> bool:
        """Whether this is a process forked from the one whose thread serves the emulator.

        The pid check of the library's sync clients (`outlines_lmstudio._sync`): a forked
        child has a copy of the emulator but none of the parent's threads, so a call that
        needs the server thread waited for one that does not exist.
        """
        served_from = self.__dict__.get("_served_from")
        return served_from is not None and served_from != os.getpid()

    def _refuse_in_forked_child(self, action: str) -> None:
        """Refuse ``action`` in a forked child: it would act on a copy the server never sees.

        Raises
        ------
        RuntimeError
            Saying so, and what still works in the child.
        """
        if self._in_forked_child():
            raise RuntimeError(
                f"{action} was called in a forked child (pid {os.getpid()}) of the process "
                f"that started this LMStudioEmulator (pid {self._served_from}): its server "
                "thread runs there, not here, so it would never see this. Control the "
                "emulator from that process; a client made here can still use it at "
                "emu.api_host."
            )

    if not TYPE_CHECKING:  # type checkers then check assignments against the settings

        def __setattr__(self, name: str, value: Any) -> None:
            if name in SETTINGS:
                self._refuse_in_forked_child(f"Setting {name}")
                value = check_setting(name, value)
                if name == "slots" and "_slots" in self.__dict__:
                    # Semaphores are made with the count; later predictions get new ones.
                    self._slots = {}
            elif (
                self.__dict__.get("_settled")
                and not name.startswith("_")
                and name not in self.__dict__
                and not hasattr(type(self), name)
            ):
                # ``emu.token_latncy = 0.05`` would otherwise be a new attribute the server
                # never reads: the test would run with the old setting and not know it.
                close = difflib.get_close_matches(name, SETTINGS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise AttributeError(
                    f"{type(self).__name__} has no setting {name!r}{hint}; the settings a test "
                    f"may change are: {', '.join(SETTINGS)}"
                )
            super().__setattr__(name, value)

    def _authenticate(self, client_id: str, passkey: str) -> bool:
        """Check a client's passkey (the first one wins); on success, count its socket.

        The passkey and the count are taken together: the socket's end releases both
        (`_release_client`), even if it closed before the reply went out. A passkey kept
        without a count stayed forever and refused the client's later passkeys.
        """
        with self._lock:
            known = self._auth.setdefault(client_id, passkey)
            if known != passkey:
                return False
            self._client_refs[client_id] = self._client_refs.get(client_id, 0) + 1
            return True

    def _release_client(self, client_id: str) -> None:
        """Uncount one closed socket of a client (`_authenticate` counted it)."""
        with self._lock:
            refs = self._client_refs.get(client_id, 0) - 1
            if refs > 0:
                self._client_refs[client_id] = refs
                return
            # The last socket closed: the client is released with its file handles.
            self._client_refs.pop(client_id, None)
            self._auth.pop(client_id, None)
            for ident in [i for i, u in self._files.items() if u.client_id == client_id]:
                del self._files[ident]
                self._drop_file_copy(ident)
        self._recorder.release(client_id)

    def _file_path(self, upload: Upload) -> str:
        """Return the path of ``upload`` on disk, writing it there the first time.

        LM Studio keeps uploads as files of its own; the emulator keeps them in memory and
        writes one to a temporary directory of its own only when a client asks for its path
        (blocking I/O: call it from a worker thread). A copy goes when its client is released,
        the directory when the emulator stops.
        """
        with self._lock:
            if self._file_dir is None:
                self._file_dir = tempfile.mkdtemp(prefix="lmstudio-emulator-files-")
            path = os.path.join(self._file_dir, upload.identifier)
            if not os.path.exists(path):
                with open(path, "wb") as file:
                    file.write(upload.data)
        return path

    def _drop_file_copy(self, ident: str) -> None:
        """Remove the copy `_file_path` wrote of upload ``ident``, if any."""
        if self._file_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self._file_dir, ident))

    def _remove_file_dir(self) -> None:
        """Remove the directory of written uploads (the emulator stopped)."""
        with self._lock:
            directory, self._file_dir = self._file_dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _violation(self, problem: str) -> None:
        with self._recorder.lock:
            self._recorder.violations.append(problem)

    def _publish_log(self, data: dict[str, Any]) -> None:
        """Hand one diagnostics log event to every open ``streamLogs`` channel.

        Runs on the server's event loop, as the channels that listen do. The timestamp is
        in milliseconds since the epoch, JavaScript's ``Date.now()`` (inferred: the SDK's
        schema says only that it is a number).
        """
        event = {"timestamp": int(time.time() * 1000), "data": data}
        for queue in self._log_listeners:
            queue.put_nowait(event)

    def _on_cancel(self, conn: object, channel: Channel) -> None:
        record = self._channel_records.get((id(conn), channel.id))
        if record is not None:
            record.cancelled = True

    def _drop_idle_engines(self) -> None:
        """Drop the engines of instances no longer loaded, when they are unloaded.

        A llama.cpp engine holds its model's weights and KV cache (hundreds of MB): they
        were kept until the next prediction looked (`engine_for`), so unloading a model to
        make room for another freed nothing (found by a probe). An engine still generating
        for the unloaded instance lives until that prediction ends.
        """
        with self._lock:
            loaded = {i.engine_key for i in self._catalogue.instances.values()}
            for key in [k for k in self._engines if k not in loaded]:
                del self._engines[key]

    def _unload_names(self, names: Sequence[str], namespace: str) -> None:
        with self._lock:
            for name in names:
                instance = self._catalogue.resolve_loaded(name)
                if instance is not None and instance.model.type == namespace:
                    self._catalogue.unload(instance.identifier)
                    return

    def _next_reply(self, instance: Instance, record: Prediction) -> Reply | None:
        """Take the next scripted reply for ``record`` on ``instance`` (None: generate one).

        A prediction that arrived before the last reset takes none: the scripts are the
        current test's.
        """
        with self._lock:
            if record._epoch != self._epoch:
                return None
            for name in (instance.identifier, instance.model.key):
                entry = self._scripts.get(name)
                if entry is None:
                    continue
                if callable(entry):
                    return entry
                if entry:
                    reply: Reply = entry.popleft()
                    return reply
        return None

    def _slot(self, instance: Instance) -> asyncio.Semaphore:
        slot = self._slots.get(instance.reference)
        if slot is None:
            slot = self._slots[instance.reference] = asyncio.Semaphore(
                _parallel(instance, self.slots)
            )
        return slot

    def _enter(self, instance: Instance, record: Prediction) -> None:
        """Count ``record`` as generating on ``instance`` (unless it predates the last reset)."""
        with self._lock:
            if record._epoch != self._epoch:
                return
            for name in ("", f"id:{instance.identifier}", f"key:{instance.model.key}"):
                active = self._active[name] = self._active.get(name, 0) + 1
                self._peak[name] = max(self._peak.get(name, 0), active)

    def _leave(self, instance: Instance, record: Prediction) -> None:
        """Uncount ``record`` (`_enter`); a reset since has cleared the counts already."""
        with self._lock:
            if record._epoch != self._epoch:
                return
            for name in ("", f"id:{instance.identifier}", f"key:{instance.model.key}"):
                self._active[name] -= 1

    @contextlib.contextmanager
    def _busy(self, what: str, instance: Instance) -> Iterator[None]:
        """Count a request of ``instance`` as ``what`` while the block runs.

        ``what`` is ``"queued"`` (from its arrival to its end, waiting or running),
        ``"generating"`` (running: its prompt, then its reply), ``"prompt"`` (processing
        its prompt) or ``"embedding"``.
        """
        key = (what, instance.reference)
        with self._lock:
            self._busy_counts[key] = self._busy_counts.get(key, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._busy_counts[key] -= 1
                if not self._busy_counts[key]:
                    del self._busy_counts[key]  # instances come and go: keep no zeros

    def _processing_state(self, instance: Instance) -> dict[str, Any]:
        """Return the ``getInstanceProcessingState`` answer for ``instance``.

        ``queued`` counts the requests in its queue, the running ones included (the SDK's
        doc comment). Which status wins while predictions in several slots are in different
        phases is inferred: a prompt being processed, then generation, then embedding.
        """
        ref = instance.reference
        with self._lock:
            counts = {what: n for (what, key), n in self._busy_counts.items() if key == ref}
        status = "idle"
        for what, name in _STATUSES:
            if counts.get(what):
                status = name
                break
        return {"status": status, "queued": counts.get("queued", 0)}

    def _restore_settings(self) -> None:
        for name, value in self._settings.items():
            setattr(self, name, value)

    def _restore_scripts(self) -> None:
        self._scripts = {}
        for model in self._catalogue.models.values():
            if model.replies is not None:
                self._scripts[model.key] = check_replies(model.replies)

    def _model_name(self, name: str) -> str:
        """Return the name a script or fault for ``name`` is kept under.

        A loaded instance's identifier stays itself; a model key, path or alias (as
        LM Studio resolves them, paths ignoring case) becomes the model's key.

        Raises
        ------
        KeyError
            If no loaded instance and no model of the catalogue has that name.
        TypeError
            If ``name`` is not a string.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"A model name must be a string (a model key, path or alias, or a loaded "
                f"instance's identifier), not {type(name).__name__} ({name!r:.60})"
            )
        with self._lock:
            if name in self._catalogue.instances:
                return name
            model = self._catalogue.find_model(name)
            if model is not None:
                return model.key
            keys = ", ".join(self._catalogue.models) or "none"
            loaded = ", ".join(self._catalogue.instances) or "none"
        raise KeyError(
            f"The emulator has no model or loaded instance named {name!r} (models: {keys}; "
            f"loaded: {loaded}). Use a model key, path or alias, or the identifier of a "
            "loaded instance (load it first: emu.load(key, identifier))."
        )

    def script(self, model_key: str, replies: Replies) -> None:
        """Script the next replies of a model (replacing earlier scripts for it).

        Parameters
        ----------
        model_key
            A model key, path or alias (the model's replies on every instance),
            or a loaded instance's identifier (that instance's replies).
        replies
            A list of replies (each a text, a `ToolCall`, a `ReasoningReply`, or a
            function of the `Prediction` returning one) consumed in the order the
            requests arrive (each takes its reply as it starts generating: one
            cancelled before, or that arrived before the last `reset`, takes none),
            so concurrent requests (a batch's) race for them; or one reply (a list
            of one: the next request takes it), or one function used for every
            request (it can answer each
            prompt its own way; it runs on the emulator's event loop: it must not
            block, or every request waits for it). Scripted
            text is sent verbatim, even for structured requests, so a test can
            produce invalid JSON on purpose. When the list runs out, the
            emulator generates text again. A `ReasoningReply` gives reasoning
            text and the answer, sent in a reasoning form.

        Raises
        ------
        KeyError
            If no model or loaded instance has that name.
        ValueError
            If the model is served by llama.cpp (``gguf=``): it writes its own replies;
            or if it is an embedding model, which never replies with text.
        TypeError
            If a reply is none of the above.
        RuntimeError
            If called in a process forked from the one that started the emulator.
        """
        self._refuse_in_forked_child("script()")
        script = check_replies(replies)
        with self._lock:
            name = self._model_name(model_key)
            instance = self._catalogue.instances.get(name)
            model = instance.model if instance is not None else self._catalogue.models[name]
            if model.type != "llm":
                raise ValueError(
                    f"{model_key!r} is an embedding model: it returns vectors, never a "
                    "reply, so a script for it would never be used. Script an LLM."
                )
            if model.gguf is not None:
                raise ValueError(
                    f"{model_key!r} is served by llama.cpp (gguf={model.gguf!r}), which "
                    "writes its own replies: scripts apply to the synthetic engine's models."
                )
            self._scripts[name] = script


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


def _parallel(instance: Instance, default: int) -> int:
    """Return how many predictions an instance runs at once: its load setting, or ``default``.

    The TypeScript SDK's ``maxParallelPredictions`` (``llm.load.numParallelSessions``,
    1 to 1023); found by a probe: it was reported back and not applied.
    """
    for item in instance.load_fields:
        value = item.get("value")
        if item.get("key") == "llm.load.numParallelSessions" and type(value) is int and value >= 1:
            return value
    return default
