"""The emulator's model catalogue: downloaded models and loaded instances.

`EmulatedModel` describes one downloaded model the way LM Studio lists it.
`Catalogue` holds the downloaded models and the loaded instances, and builds
the ``ModelInfo`` / ``InstanceInfo`` payloads of the wire protocol. It is not
thread-safe by itself: the emulator guards it with its own lock.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from outlines_lmstudio.testing._reasoning_forms import check_form
from outlines_lmstudio.testing._scripts import check_replies

if TYPE_CHECKING:
    from outlines_lmstudio.testing._reasoning_forms import ReasoningReply
    from outlines_lmstudio.testing._records import Prediction
    from outlines_lmstudio.testing._tools import ToolCall

__all__ = [
    "DEFAULT_GGUF_CONTEXT",
    "MODEL_FORMATS",
    "MODEL_TYPES",
    "Catalogue",
    "EmulatedModel",
    "Instance",
    "Reply",
    "Replies",
    "default_models",
]

MODEL_TYPES = ("llm", "embedding")
"""The model types the emulator serves (one websocket namespace each)."""

MODEL_FORMATS = ("gguf", "safetensors", "onnx", "ggml", "mlx_placeholder", "torch_safetensors")
"""The ``format`` values the SDK decodes (its ``ModelCompatibilityType``)."""

DEFAULT_GGUF_CONTEXT = 4096
_FROM_THE_FILE = ("format", "context_length", "embedding_dims", "reasoning")
"""`EmulatedModel` fields a ``gguf=`` model takes from its file (or, reasoning, does not use)."""
"""The context length a GGUF model is loaded with unless the load config says otherwise
(LM Studio's default; the model's own maximum stays its ``maxContextLength``)."""

Reply: TypeAlias = (
    "str | ToolCall | ReasoningReply | Callable[[Prediction], str | ToolCall | ReasoningReply]"
)
"""A scripted reply: fixed text, a tool call, reasoning and answer, or a function of the request."""

Replies: TypeAlias = "Sequence[Reply] | Reply"
"""Scripted replies: a list consumed in order, or one reply (a function: for every request).

One `ToolCall` is one reply too (found by a probe: it worked, and type checkers refused it)."""


@dataclass
class EmulatedModel:
    """A model the emulator knows about, as LM Studio would list it.

    Parameters
    ----------
    key
        The model key (``modelKey``), e.g. ``"qwen2.5-7b-instruct"``.
    type
        ``"llm"`` or ``"embedding"``.
    format
        The ``format`` LM Studio reports: ``"gguf"`` for llama.cpp models,
        ``"safetensors"`` for MLX models (see `default_models`).
    vision
        Whether the model accepts images (LLMs only; not with ``gguf``, which is
        served text-only).
    tool_use
        Reported as ``trainedForToolUse`` (LLMs only). Such a model calls the first tool
        it is offered (``.act()``); another calls one only under ``toolChoice:
        "required"``, and otherwise answers in text.
    context_length
        ``maxContextLength``; also the default ``contextLength`` when loaded, except for
        a ``"gguf"`` model, which is loaded with at most 4096 tokens (LM Studio's default).
    loaded
        Whether an instance is loaded when the emulator starts or is reset.
    identifier
        The identifier of that initial instance (defaults to ``key``).
    display_name
        ``displayName`` (defaults to ``key``).
    size_bytes
        ``sizeBytes`` on disk.
    params
        ``paramsString``, e.g. ``"7B"``.
    architecture
        ``architecture``, e.g. ``"qwen2"``.
    embedding_dims
        Length of the vectors returned by ``embedString`` (embedding models).
    replies
        Scripted replies (LLMs only) used before the deterministic generator: a list
        consumed in order, or one function used for every request. A reply
        may be a `ToolCall`, so that ``.act()`` runs a tool round.
    path
        The ``path`` LM Studio reports, ``publisher/repository/file`` (e.g.
        ``"lmstudio-community/Qwen2.5-7B-Instruct-GGUF/Qwen2.5-7B-Instruct-Q4_K_M.gguf"``);
        by default ``emulator/<key>/<key>.gguf`` (no ``.gguf`` for other formats).
    publisher
        ``publisher`` (defaults to the first part of ``path``).
    aliases
        Other names a query may use for this model, as LM Studio resolves them
        (e.g. ``"hugging-quants/llama-3.2-1b-instruct"``).
    gguf
        A GGUF file: the model is then served by llama.cpp (llama-cpp-python,
        the ``local`` extra) instead of the synthetic engine, and
        ``size_bytes``, ``context_length`` (its maximum) and ``architecture``
        are read from the file. A relative path is taken from the current
        directory when the model is made.
    reasoning
        How the model thinks before it answers: a reasoning form (``"think"``,
        ``"marker"``, ``"marker-inline"``, ``"legacy"``, ``"mlx"``, ``"harmony"``;
        see `ReasoningReply`), or ``None`` for a model that does not reason. The
        synthetic engine writes the reasoning; a ``gguf`` model thinks as its file does.
    """

    key: str
    type: Literal["llm", "embedding"] = "llm"
    format: str = "gguf"
    vision: bool = False
    tool_use: bool = False
    context_length: int = 4096
    loaded: bool = True
    identifier: str | None = None
    display_name: str | None = None
    size_bytes: int = 4_683_073_952
    params: str | None = None
    architecture: str | None = None
    embedding_dims: int = 768
    replies: Replies | None = None
    path: str = ""
    publisher: str = ""
    aliases: Sequence[str] = ()
    gguf: str | os.PathLike[str] | None = None
    reasoning: str | None = None

    def __post_init__(self) -> None:
        self._check_fields()
        check_form(self.reasoning)
        if self.reasoning is not None and self.type != "llm":
            raise ValueError(
                f"EmulatedModel {self.key!r}: an embedding model never replies, so "
                f"reasoning={self.reasoning!r} would never be used"
            )
        for flag in ("vision", "tool_use"):
            if getattr(self, flag) and self.type != "llm":
                # LM Studio lists neither for an embedding model: the flag would be dropped.
                raise ValueError(
                    f"EmulatedModel {self.key!r}: an embedding model takes no images and "
                    f"calls no tools, so {flag}=True would never be used"
                )
        if self.replies is not None:
            script = check_replies(self.replies)
            if not callable(script) and not isinstance(self.replies, Sequence):
                # An iterator (a generator of replies) is spent by the check: keep its
                # items, which every start and reset of the emulator scripts again.
                self.replies = list(script)
            if self.type != "llm":
                raise ValueError(
                    f"EmulatedModel {self.key!r}: an embedding model returns vectors, never "
                    "a reply, so replies= would never be used"
                )
            if self.gguf is not None:
                raise ValueError(
                    f"EmulatedModel {self.key!r}: a gguf model writes its own replies with "
                    "llama.cpp; replies= scripts apply to the synthetic engine only"
                )
        if self.gguf is not None:
            # What the file says, or the synthetic engine alone reads, given too: refused, not
            # silently replaced or ignored, as vision= and replies= are (found by a probe).
            given = [
                f"{f.name}={getattr(self, f.name)!r}"
                for f in fields(self)
                if f.name in _FROM_THE_FILE and getattr(self, f.name) != f.default
            ]
            if given:
                raise ValueError(
                    f"EmulatedModel {self.key!r}: a gguf model's format, context length and "
                    "embedding size are its file's, and it reasons as its file does, so "
                    f"{', '.join(given)} would not be used: leave "
                    f"{'it' if len(given) == 1 else 'them'} out (a load's contextLength sets "
                    "the loaded context)"
                )
            if self.vision:
                raise ValueError(
                    f"EmulatedModel {self.key!r}: a gguf model is served text-only by "
                    "llama.cpp (no vision projector), so it cannot take images; "
                    "leave vision=False"
                )
            from outlines_lmstudio.testing._llama import read_facts

            facts = read_facts(self.gguf)
            # Kept absolute: a relative path would be read again from whatever the cwd is
            # when the model is (re)loaded, not from where it was given.
            self.gguf = os.path.abspath(os.fspath(self.gguf))
            self.format = "gguf"
            self.size_bytes = facts.size_bytes
            self.context_length = facts.context_length
            self.architecture = facts.architecture
            self.params = self.params or facts.params
            self.display_name = self.display_name or facts.name
            if facts.embedding_dims is not None:
                self.embedding_dims = facts.embedding_dims
        if not self.path:
            suffix = ".gguf" if self.format == "gguf" else ""
            self.path = f"emulator/{self.key}/{self.key}{suffix}"
        if not self.publisher:
            self.publisher = self.path.split("/", 1)[0]
        if isinstance(self.aliases, str) or not isinstance(self.aliases, Iterable):
            raise TypeError(  # found by a probe: None was "'NoneType' object is not iterable"
                f"EmulatedModel.aliases must be a sequence of names, not {self.aliases!r:.80}"
            )
        self.aliases = tuple(self.aliases)
        for alias in self.aliases:
            if not isinstance(alias, str) or not alias.strip():
                # Found by a probe: an int alias was taken, then every lookup of another
                # name failed on it (the request was never answered).
                raise TypeError(f"EmulatedModel.aliases must hold non-empty strings, not {alias!r}")

    def _check_fields(self) -> None:
        """Refuse values the SDKs cannot decode: they would break every model listing."""
        if not isinstance(self.key, str) or not self.key.strip():  # blank: as aliases
            raise ValueError(f"EmulatedModel key must be a non-empty string, not {self.key!r}")
        if self.type not in MODEL_TYPES:
            raise ValueError(
                f"EmulatedModel {self.key!r}: type must be one of {MODEL_TYPES}, not {self.type!r}"
            )
        if self.format not in MODEL_FORMATS:
            raise ValueError(
                f"EmulatedModel {self.key!r}: format must be one of {MODEL_FORMATS} "
                f"(an MLX model is 'safetensors'), not {self.format!r}"
            )
        for name in ("context_length", "embedding_dims"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"EmulatedModel {self.key!r}: {name} must be a positive integer, not {value!r}"
                )
        size = self.size_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(
                f"EmulatedModel {self.key!r}: size_bytes must be a whole number of bytes "
                f"(0 or more), not {size!r}"
            )
        for name in ("vision", "tool_use", "loaded"):  # "no" would be read as true
            if not isinstance(value := getattr(self, name), bool):
                raise ValueError(
                    f"EmulatedModel {self.key!r}: {name} must be True or False, not {value!r}"
                )
        for name in ("identifier", "display_name", "params", "architecture", "path", "publisher"):
            if not isinstance(value := getattr(self, name), str | None):
                raise ValueError(
                    f"EmulatedModel {self.key!r}: {name} must be a string, not {value!r}"
                )
        if self.identifier is not None and not self.identifier.strip():
            # Found by a probe: "" was taken as the key, silently.
            raise ValueError(
                f"EmulatedModel {self.key!r}: identifier must be a non-empty string or None "
                f"(the key), not {self.identifier!r}"
            )
        for name in ("key", "identifier"):
            value = getattr(self, name)
            if value is not None and value != value.strip():
                # Found by a probe: served, where LM Studio's names have none and the
                # library refuses such a name before sending.
                raise ValueError(
                    f"EmulatedModel {self.key!r}: the {name} has whitespace around it, which "
                    f"LM Studio's names do not: use {value.strip()!r}"
                )

    @property
    def load_context_length(self) -> int:
        """The context length of a new instance when the load config sets none."""
        if self.format == "gguf":
            return min(self.context_length, DEFAULT_GGUF_CONTEXT)
        return self.context_length

    def names(self) -> tuple[str, ...]:
        """Every name a query by key, path or alias resolves to this model."""
        return (self.key, self.path, *self.aliases)

    def model_info(self) -> dict[str, Any]:
        """Return the wire ``ModelInfo`` of this downloaded model."""
        info: dict[str, Any] = {
            "type": self.type,
            "modelKey": self.key,
            "format": self.format,
            "displayName": self.display_name or self.key,
            "publisher": self.publisher,
            "path": self.path,
            "sizeBytes": self.size_bytes,
            "indexedModelIdentifier": self.path,
            "deviceIdentifier": None,
            "maxContextLength": self.context_length,
        }
        if self.type == "llm":
            info["vision"] = self.vision
            info["trainedForToolUse"] = self.tool_use
        if self.params is not None:
            info["paramsString"] = self.params
        if self.architecture is not None:
            info["architecture"] = self.architecture
        if self.format == "gguf" and (quantization := _quantization(self._file_names())):
            info["quantization"] = quantization
        return info

    def _file_names(self) -> list[str]:
        """Return the names that may say its quantization: its path's, its GGUF file's."""
        names = [self.path.rsplit("/", 1)[-1]]
        if self.gguf is not None:
            names.append(os.path.basename(os.fspath(self.gguf)))
        return names


_QUANTIZATION = re.compile(r"(?<![a-z0-9])(i?q(\d)(?:_[a-z0-9]+)*|bf16|f16|f32)(?![a-z0-9])", re.I)
"""A GGUF quantization in a file name (``...-Q4_K_M.gguf``), and its bits for a ``Q`` one."""


def _quantization(names: list[str]) -> dict[str, Any] | None:
    """Return LM Studio's ``quantization`` of a GGUF model (``{"name": "Q4_K_M", "bits": 4}``).

    LM Studio reads it from the file; the emulator from the file's name, as model files are
    named (inferred: lmstudio-js's own tests show it for a Q4_K_M model). ``None`` when no
    name says it: LM Studio's field is optional ("may not always be available").
    """
    for name in names:
        if (found := _QUANTIZATION.search(name)) is not None:
            label = found[1].upper()
            bits = int(found[2]) if found[2] else int(label.removeprefix("B")[1:])
            return {"name": label, "bits": bits}
    return None


def default_models() -> list[EmulatedModel]:
    """Return the default catalogue.

    Returns
    -------
    list[EmulatedModel]
        A text-only GGUF LLM with tool use, a GGUF vision LLM, an MLX LLM,
        an embedding model (all loaded), a GGUF LLM that is downloaded but
        not loaded (``getOrLoad`` loads it, reporting progress). Add
        `reasoning_models` for models that think before they answer.
    """
    return [
        EmulatedModel(
            "qwen2.5-7b-instruct",
            tool_use=True,
            context_length=32768,
            params="7B",
            architecture="qwen2",
            display_name="Qwen2.5 7B Instruct",
        ),
        EmulatedModel(
            "qwen2-vl-2b-instruct",
            vision=True,
            params="2B",
            architecture="qwen2vl",
            size_bytes=1_653_000_000,
            display_name="Qwen2 VL 2B Instruct",
        ),
        # MLX models are directories of safetensors files. The SDK's schema also
        # allows "mlx_placeholder", but that literal is a placeholder name in
        # lmstudio-js; an MLX model is reported as "safetensors" (inferred: not
        # checked against a real Mac running LM Studio).
        EmulatedModel(
            "llama-3.2-1b-instruct-mlx",
            format="safetensors",
            params="1B",
            architecture="llama",
            size_bytes=712_575_975,
            display_name="Llama 3.2 1B Instruct (MLX)",
        ),
        EmulatedModel(
            "text-embedding-nomic-embed-text-v1.5",
            type="embedding",
            context_length=2048,
            architecture="nomic-bert",
            size_bytes=84_106_624,
            display_name="Nomic Embed Text v1.5",
        ),
        EmulatedModel(
            "gemma-3-1b-it",
            loaded=False,
            params="1B",
            architecture="gemma3",
            size_bytes=720_425_472,
            display_name="Gemma 3 1B Instruct",
        ),
    ]


@dataclass
class Instance:
    """A loaded instance of a model."""

    model: EmulatedModel
    identifier: str
    reference: str
    context_length: int
    load_fields: list[dict[str, Any]] = field(default_factory=list)
    ttl_ms: int | None = None
    jit: bool = False
    last_used: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        """Return the wire ``InstanceInfo`` of this instance."""
        info = self.model.model_info()
        info["identifier"] = self.identifier
        info["instanceReference"] = self.reference
        info["contextLength"] = self.context_length
        info["ttlMs"] = self.ttl_ms
        info["lastUsedTime"] = int(self.last_used * 1000)
        return info

    @property
    def engine_key(self) -> str:
        """What makes two loads the same for an engine: identifier, file and load config."""
        facts = [
            self.identifier,
            self.model.type,
            str(self.model.gguf),
            self.context_length,
            self.load_fields,
        ]
        return json.dumps(facts, sort_keys=True, default=str)

    def expired(self, now: float) -> bool:
        """Whether the time-to-live has run out since the last use."""
        return self.ttl_ms is not None and now - self.last_used > self.ttl_ms / 1000

    def load_config(self) -> dict[str, Any]:
        """Return the ``KVConfig`` the instance was loaded with."""
        prefix = "llm" if self.model.type == "llm" else "embedding"
        fields = [{"key": f"{prefix}.load.contextLength", "value": self.context_length}]
        fields += [f for f in self.load_fields if f.get("key") != fields[0]["key"]]
        return {"fields": fields}


class Catalogue:
    """Downloaded models and loaded instances (guarded by the emulator's lock)."""

    def __init__(self, models: Sequence[EmulatedModel]) -> None:
        self._initial = [copy.copy(m) for m in models]
        names = [name for m in self._initial for name in dict.fromkeys(m.names())]
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"duplicate model keys, paths or aliases in the catalogue: {dupes}")
        self.models: dict[str, EmulatedModel] = {}
        self.instances: dict[str, Instance] = {}
        self._counter = 0
        self.on_unload: Callable[[], None] | None = None
        """Called after instances were unloaded (by `unload`, `expire` or `reset`)."""
        self.reset()

    def _unloaded(self) -> None:
        if self.on_unload is not None:
            self.on_unload()

    def reset(self) -> None:
        """Restore the initial catalogue and loaded state."""
        self.models = {m.key: copy.copy(m) for m in self._initial}
        self.instances = {}
        for model in self.models.values():
            if model.loaded:
                self.load(model, model.identifier)
        self._unloaded()

    def find_model(self, name: str) -> EmulatedModel | None:
        """Find a downloaded model by key, path or alias.

        Exact names first, then the same names ignoring case (LM Studio's
        paths come from file names, and queries for them ignore case). Not by display
        name, as LM Studio does not (found by a probe: a loaded model asked for by its
        display name was loaded again, as ``key:2``).
        """
        for model in self.models.values():
            if name in model.names():
                return model
        folded = name.casefold()
        for model in self.models.values():
            if folded in (n.casefold() for n in model.names()):
                return model
        if "@" not in name:
            # A variant's key (``qwen/qwen3-4b@q4_k_m``) without its ``@variant``: LM Studio
            # takes the model's default variant, the emulator its only one (found by a
            # probe: "Cannot find a model with path").
            for model in self.models.values():
                if model.key.partition("@")[0].casefold() == folded and "@" in model.key:
                    return model
        return None

    def find_instance(self, identifier: str) -> Instance | None:
        """Find a loaded instance by its exact identifier."""
        self.expire()
        return self.instances.get(identifier)

    def resolve_loaded(self, name: str) -> Instance | None:
        """Find a loaded instance by identifier, then by its model's key, path or alias."""
        self.expire()
        instance = self.instances.get(name)
        if instance is not None:
            return instance
        for candidate in self.instances.values():
            if name in candidate.model.names():
                return candidate
        folded = name.casefold()
        for candidate in self.instances.values():
            if folded in (n.casefold() for n in candidate.model.names()):
                return candidate
        return None

    def expire(self, now: float | None = None) -> list[Instance]:
        """Unload the instances whose time-to-live ran out; return them."""
        now = time.time() if now is None else now
        gone = [i for i in self.instances.values() if i.expired(now)]
        for instance in gone:
            del self.instances[instance.identifier]
        if gone:
            self._unloaded()
        return gone

    def jit_instances(self) -> list[Instance]:
        """Return the instances loaded just in time (by ``getOrLoad``)."""
        self.expire()
        return [i for i in self.instances.values() if i.jit]

    def next_identifier(self, key: str) -> str:
        """Return the identifier LM Studio would give a new instance of ``key``."""
        if key not in self.instances:
            return key
        n = 2
        while f"{key}:{n}" in self.instances:
            n += 1
        return f"{key}:{n}"

    def load(
        self,
        model: EmulatedModel,
        identifier: str | None = None,
        *,
        context_length: int | None = None,
        load_fields: list[dict[str, Any]] | None = None,
        ttl_ms: int | None = None,
        jit: bool = False,
    ) -> Instance:
        """Load a new instance of ``model``."""
        ident = identifier or self.next_identifier(model.key)
        if ident in self.instances:
            raise ValueError(f'A model with the identifier "{ident}" already exists.')
        self._counter += 1
        instance = Instance(
            model=model,
            identifier=ident,
            reference=f"emulator-instance-{self._counter}",
            context_length=context_length or model.load_context_length,
            load_fields=list(load_fields or []),
            ttl_ms=ttl_ms,
            jit=jit,
        )
        self.instances[ident] = instance
        return instance

    def unload(self, identifier: str) -> Instance | None:
        """Unload an instance; return it, or None if there was none."""
        instance = self.instances.pop(identifier, None)
        if instance is not None:
            self._unloaded()
        return instance

    def loaded_of_type(self, model_type: str) -> list[Instance]:
        """Return the loaded instances of one domain, in load order."""
        self.expire()
        return [i for i in self.instances.values() if i.model.type == model_type]
