"""llama.cpp through llama-cpp-python's low-level API: a model, its tokenizer, a decoder.

Everything here is blocking and meant to run on a worker thread (never on the
emulator's event loop); `outlines_lmstudio.testing._llama` drives it. We use
the ``llama_*`` C functions rather than llama-cpp-python's ``Llama`` class
because we need what llama.cpp's own server does and ``Llama`` does not:
grammar checks after sampling (see `Decoder.step`), per-token cancellation
and KV-cache reuse across requests we control.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import llama_cpp as L
import numpy as np

from outlines_lmstudio.testing._llama_plan import Sampling
from outlines_lmstudio.testing._wire import embedding_overflow, well_formed

__all__ = [
    "ModelLoadError",
    "GgufFacts",
    "GrammarDeadEnd",
    "GrammarError",
    "NativeModel",
    "Decoder",
    "embed",
    "model_params",
    "read_facts",
]

_T = TypeVar("_T")
_init_lock = threading.Lock()
_initialised = False
# llama.cpp's log lines, by the thread that made the call (llama.cpp logs a load's or a
# grammar's errors from the calling thread): what `_logged` collects.
_log_sinks: dict[int, list[tuple[int, str]]] = {}
_ERROR_LEVEL = 4  # GGML_LOG_LEVEL_ERROR
_FUNCTION = re.compile(r"^(?:[a-z_]+: )+")  # the C function names llama.cpp's lines start with


def _on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    sink = _log_sinks.get(threading.get_ident())
    if sink is not None:
        sink.append((level, text.decode("utf-8", "replace")))


@contextlib.contextmanager
def _logged() -> Iterator[list[tuple[int, str]]]:
    """Collect llama.cpp's log lines (level, text) of this thread while in the block."""
    sink: list[tuple[int, str]] = []
    _log_sinks[threading.get_ident()] = sink
    try:
        _init()  # our callback, set again (see there)
        yield sink
    finally:
        _log_sinks.pop(threading.get_ident(), None)


def _load_reason(lines: list[tuple[int, str]]) -> str:
    """Return llama.cpp's reason for refusing a model file, from its error lines.

    ``llama_model_load: error loading model: unknown model architecture: 'gemma99'`` says
    ``unknown model architecture: 'gemma99'``; a split file's missing shard, a truncated
    file and a key missing from the metadata are each named that way (found by a probe:
    every one was "cannot read this file"). The last line ("failed to load model") says
    nothing and is left out.
    """
    reasons: list[str] = []
    for level, text in lines:
        if level != _ERROR_LEVEL:
            continue
        text = _FUNCTION.sub("", text.strip()).removeprefix("error loading model: ")
        text = _FUNCTION.sub("", text)
        if text and text != "failed to load model" and text not in reasons:
            reasons.append(text)
    # "failed to load model from PATH" follows a reason of its own (the path once is enough)
    named = [reason for reason in reasons if not reason.startswith("failed to load model")]
    return "; ".join(named or reasons) or "no reason given"


# Kept referenced for the life of the process: llama.cpp calls it from C.
_LOG_CALLBACK = L.llama_log_callback(_on_log)


def _init() -> None:
    """Initialise the llama.cpp backend once, and route its log to `_on_log` (quiet).

    The log callback is llama.cpp's one process-wide setting, and other code in the
    process may set its own (llama-cpp-python's logger, a test's harness) and then let
    it be freed: llama.cpp would call freed memory on its next log line (a model load
    crashed the test run with SIGSEGV that way). So ours is set again before each load.
    """
    global _initialised
    with _init_lock:
        L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        if not _initialised:
            L.llama_backend_init()
            _initialised = True


def model_params() -> Any:
    """Return llama.cpp's model-load parameters for a full (weights) load.

    Where llama.cpp was built with Intel AMX and the CPU reports it, its weights go to the
    AMX buffer type, and on virtual machines that report AMX (measured on a Xeon guest
    whose kernel grants the AMX permission) its matrix multiply crashes the process with
    SIGSEGV at ``ldtilecfg`` on the first decode, in llama.cpp's own examples too. So the
    extra buffer types (AMX, and the CPU repacking that comes with them) are turned off
    there: the plain CPU kernels, slower on prompts, never crash. Elsewhere the defaults
    stand.
    """
    params = L.llama_model_default_params()
    if b"AMX_INT8 = 1" in L.llama_print_system_info():
        params.use_extra_bufts = False
    return params


_BATCH = 512  # prompt tokens decoded per llama_decode call (n_batch, n_ubatch)
_BEST = 256  # candidates checked against a grammar before masking the whole vocabulary


class GrammarError(ValueError):
    """llama.cpp could not parse a GBNF grammar (the message holds its reason)."""


class GrammarDeadEnd(RuntimeError):
    """The grammar allows no token, not even the end: generation cannot go on.

    Accepting a token the grammar forbids makes llama.cpp throw a C++ exception
    that aborts the process, so the sampler raises this instead.
    """


@dataclass(frozen=True)
class GgufFacts:
    """What LM Studio reads from a GGUF file to list a model."""

    size_bytes: int
    context_length: int
    architecture: str
    name: str | None
    params: str | None
    embedding_dims: int | None
    kv_bytes_per_token: int | None = None  # the f16 KV cache of every layer, if the file says


_facts_cache: dict[tuple[str, int, int], GgufFacts] = {}


def _meta(model: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(1024)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else None


def _kv_bytes_per_token(model: Any, arch: str) -> int | None:
    """Bytes of f16 KV cache one token takes in every layer (None if the file does not say).

    An upper bound: llama.cpp keeps a sliding-window layer's cache (most of Gemma 3's
    layers) at the window's size, and this counts every layer at the full context.
    """

    def number(key: str) -> int | None:
        value = _meta(model, f"{arch}.{key}")
        return int(value) if value is not None and value.isdigit() else None

    layers, embd, heads = (
        number("block_count"),
        number("embedding_length"),
        number("attention.head_count"),
    )
    kv_heads = number("attention.head_count_kv") or heads
    head_dim = embd // heads if embd and heads else None
    key_length = number("attention.key_length") or head_dim
    value_length = number("attention.value_length") or head_dim
    if not (layers and kv_heads and key_length and value_length):
        return None
    return layers * kv_heads * (key_length + value_length) * 2


def read_facts(path: str | os.PathLike[str]) -> GgufFacts:
    """Read size, context length and architecture from a GGUF file (vocabulary-only load).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If llama.cpp cannot read it as a GGUF model.
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    cached = _facts_cache.get(key)
    if cached is not None:
        return cached
    facts = _off_the_main_thread(_read_facts_now, path, stat.st_size)
    _facts_cache[key] = facts
    return facts


def _off_the_main_thread(work: Callable[..., _T], *args: Any) -> _T:
    """Run ``work`` in a thread of its own when called from the main thread, and wait.

    llama.cpp logs through `_on_log` while it loads (a vocabulary-only load takes about a
    second), and a Ctrl-C then raises in that callback, where ctypes prints "Exception
    ignored on calling ctypes callback function" and drops it (found by a probe: the demo
    went on to its end). Waited for here, it interrupts the wait; the load finishes in its
    thread and is freed there.
    """
    if threading.current_thread() is not threading.main_thread():
        return work(*args)
    done: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(work(*args))
        except BaseException as exc:  # handed to the waiting caller
            done.set_exception(exc)

    threading.Thread(target=run, name="outlines-lmstudio-gguf", daemon=True).start()
    return done.result()


def _read_facts_now(path: str, size_bytes: int) -> GgufFacts:
    params = L.llama_model_default_params()
    params.vocab_only = True
    with _logged() as lines:
        model = L.llama_model_load_from_file(os.fsencode(path), params)
    if model is None:
        reason = _load_reason(lines)
        raise ValueError(f"{path}: llama.cpp cannot read this file as a GGUF model: {reason}")
    try:
        arch = _meta(model, "general.architecture") or "unknown"
        context = _meta(model, f"{arch}.context_length")
        if context is None or not context.isdigit():
            # llama.cpp requires it to load the weights: it was listed with a made-up 2048
            # and failed on every call (found by a probe).
            raise ValueError(
                f"{path}: llama.cpp cannot load this GGUF model: key not found in model: "
                f"{arch}.context_length"
            )
        dims = _meta(model, f"{arch}.embedding_length")
        facts = GgufFacts(
            size_bytes=_shards_size(model, path, size_bytes),
            context_length=int(context),
            architecture=arch,
            name=_meta(model, "general.name"),
            params=_meta(model, "general.size_label"),
            embedding_dims=int(dims) if dims else None,
            kv_bytes_per_token=_kv_bytes_per_token(model, arch),
        )
    finally:
        L.llama_model_free(model)
    return facts


def _shards_size(model: Any, path: str, size_bytes: int) -> int:
    """Return the size of the whole model: a split GGUF's shards together, as LM Studio.

    The shards' names are llama.cpp's own (``llama_split_prefix`` / ``llama_split_path``,
    split numbers from 0); found by a probe: only the first shard's size was listed.
    """
    count = _meta(model, "split.count")
    if count is None or not count.isdigit() or int(count) <= 1:
        return size_bytes
    prefix = ctypes.create_string_buffer(4096)
    if L.llama_split_prefix(prefix, len(prefix), os.fsencode(path), 0, int(count)) <= 0:
        return size_bytes  # not named as the first shard: llama.cpp refuses it anyway
    total = 0
    for number in range(int(count)):
        shard = ctypes.create_string_buffer(4096)
        L.llama_split_path(shard, len(shard), prefix.value, number, int(count))
        total += os.stat(os.fsdecode(shard.value)).st_size
    return total


class ModelLoadError(ValueError):
    """llama.cpp read the file's metadata but could not load the model (its weights)."""


class NativeModel:
    """A loaded llama.cpp model: weights, vocabulary and metadata (thread-safe reads).

    A llama.cpp context borrows its model: the weights must outlive every context
    made on them. `Decoder` holds the model while its context lives, and `close`
    frees the weights only once no context holds them (the garbage collector
    finalises a model and its decoder in any order).
    """

    def __init__(self, path: str) -> None:
        self.model: Any = None
        self._holds = 0  # live contexts on these weights
        self._closing = False
        self._holds_lock = threading.Lock()
        with _logged() as lines:
            model = L.llama_model_load_from_file(os.fsencode(path), model_params())
        if model is None:
            reason = _load_reason(lines)
            raise ModelLoadError(f"{path}: llama.cpp could not load this GGUF model: {reason}")
        self.path = path
        self.model = model
        vocab = L.llama_model_get_vocab(model)
        assert vocab is not None
        self.vocab = vocab
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self.n_embd = L.llama_model_n_embd(model)
        self.add_bos = bool(L.llama_vocab_get_add_bos(vocab))
        self.add_eos = bool(L.llama_vocab_get_add_eos(vocab))
        self.bos_text = self._special_text(L.llama_vocab_bos(vocab))
        self.eos_text = self._special_text(L.llama_vocab_eos(vocab))
        self.architecture = _meta(model, "general.architecture") or "unknown"
        self.pooling = _meta(model, f"{self.architecture}.pooling_type")
        template = L.llama_model_chat_template(model, None)
        self.chat_template = template.decode("utf-8") if template else None

    def close(self) -> None:
        """Free the weights, now or when the last context made on them is freed."""
        with self._holds_lock:
            self._closing = True
            free = self._holds == 0
        if free:
            self._free()

    def hold(self) -> None:
        """Keep the weights for a context made on them (until `release`)."""
        with self._holds_lock:
            self._holds += 1

    def release(self) -> None:
        """Let go of the weights for a freed context (and free them if `close` was called)."""
        with self._holds_lock:
            self._holds -= 1
            free = self._closing and self._holds == 0
        if free:
            self._free()

    def _free(self) -> None:
        model, self.model = self.model, None
        if model is not None:
            L.llama_model_free(model)

    def __del__(self) -> None:
        self.close()

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        """Token ids of ``text`` by the model's tokenizer (a lone surrogate as U+FFFD)."""
        data = well_formed(text).encode("utf-8")
        size = len(data) + 8
        tokens = (L.llama_token * size)()
        n = L.llama_tokenize(self.vocab, data, len(data), tokens, size, add_special, parse_special)
        if n < 0:
            size = -n
            tokens = (L.llama_token * size)()
            n = L.llama_tokenize(
                self.vocab, data, len(data), tokens, size, add_special, parse_special
            )
        return list(tokens[:n])

    def _special_text(self, token: int) -> str:
        return self.piece(token, special=True).decode("utf-8", "replace") if token >= 0 else ""

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """Return the bytes a token stands for."""
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, ...)."""
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def grammar(self, gbnf: str) -> Any:
        """Build llama.cpp's grammar sampler for ``gbnf`` (root rule ``root``).

        Raises
        ------
        GrammarError
            With llama.cpp's own parse error, if the grammar is invalid.
        """
        with _logged() as lines:  # the parse error comes as log lines
            # surrogateescape: the bytes of a character the schema converter cut in two
            # (`_llama_pattern`), which llama.cpp's parser then refuses as LM Studio's does
            data = gbnf.encode("utf-8", "surrogateescape")
            sampler = L.llama_sampler_init_grammar(self.vocab, data, b"root")
        if not sampler:
            reason = " ".join(m.strip() for _, m in lines if m.strip()) or "invalid grammar"
            raise GrammarError(reason)
        return sampler


class _Samplers:
    """llama.cpp's sampler chain for one prediction, split in two.

    ``penalties`` (repeat penalty) comes first, as in llama.cpp's default
    order, and counts the prompt's tokens as well as the sampled ones; ``rest``
    is top-k, top-p, min-p, temperature and the final pick (greedy at
    temperature 0). Split so that a grammar can be applied between them to a
    few candidates (see `Decoder.sample`).
    """

    def __init__(self, model: NativeModel, sampling: Sampling) -> None:
        self.greedy = sampling.temperature <= 0
        self.top_k = 0 if self.greedy else max(0, sampling.top_k)
        self.penalties: Any = None
        self.last_n = sampling.repeat_last_n
        if sampling.repeat_penalty != 1.0:
            self.penalties = L.llama_sampler_init_penalties(
                model.n_vocab, sampling.repeat_last_n, sampling.repeat_penalty, 0.0, 0.0
            )
        self.rest = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        parts = []
        if self.greedy:
            parts.append(L.llama_sampler_init_greedy())
        else:
            if sampling.top_k > 0:
                parts.append(L.llama_sampler_init_top_k(sampling.top_k))
            if sampling.top_p < 1.0:
                parts.append(L.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0.0:
                parts.append(L.llama_sampler_init_min_p(sampling.min_p, 1))
            parts.append(L.llama_sampler_init_temp(sampling.temperature))
            parts.append(L.llama_sampler_init_dist(sampling.seed))
        for part in parts:
            L.llama_sampler_chain_add(self.rest, part)

    def penalise(self, ref: Any) -> None:
        if self.penalties:
            L.llama_sampler_apply(self.penalties, ref)

    def pick(self, ref: Any) -> None:
        L.llama_sampler_apply(self.rest, ref)

    def remember_prompt(self, prompt: list[int]) -> None:
        """Let the repeat penalty count the prompt's tokens (the last ``repeat_last_n`` of them).

        As llama.cpp's server does once a prompt is processed (ggml-org/llama.cpp,
        tools/server/server.cpp, now server-context.cpp: "Process all prompt tokens
        through sampler system", ``common_sampler_accept(slot.smpl, id, false)`` for
        every token of the prompt, the part reused from the cache included): its
        sampler chain sees them, the grammar does not (``false``). Of that chain only
        the penalties keep state (the other samplers' accept does nothing), so only
        they are fed here. llama-cpp-python's ``Llama`` does not do this: its penalties
        count sampled tokens only.
        """
        if self.penalties:
            # Only the window's worth: the penalty keeps the last ``repeat_last_n`` tokens
            # (found by a review: a 32k-token prompt fed whole took 19 ms under the engine's
            # lock).
            for token in prompt[-self.last_n :] if self.last_n > 0 else ():
                L.llama_sampler_accept(self.penalties, token)

    def accept(self, token: int) -> None:
        if self.penalties:
            L.llama_sampler_accept(self.penalties, token)
        L.llama_sampler_accept(self.rest, token)

    def free(self) -> None:
        for sampler in (self.penalties, self.rest):
            if sampler:
                L.llama_sampler_free(sampler)
        self.penalties = self.rest = None


_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class _Candidates:
    """A reusable ``llama_token_data_array`` of up to ``capacity`` tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = np.zeros(capacity, dtype=_DTYPE)
        self.ids = np.arange(capacity, dtype=np.int32)
        self.array = L.llama_token_data_array(
            data=self.data.ctypes.data_as(L.llama_token_data_p),
            size=capacity,
            selected=-1,
            sorted=False,
        )
        self.ref = ctypes.byref(self.array)

    def _reset(self, size: int) -> None:
        self.array.size = size
        self.array.selected = -1
        self.array.sorted = False

    def fill(self, logits: Any) -> None:
        """Hold the whole vocabulary with these logits."""
        self.data["id"] = self.ids
        self.data["logit"] = np.ctypeslib.as_array(logits, shape=(self.capacity,))
        self.data["p"] = 0.0
        self._reset(self.capacity)

    def best_of(self, source: _Candidates, n: int) -> None:
        """Hold the ``n`` highest-logit tokens of ``source`` (unordered)."""
        logits = source.data["logit"][: source.array.size]
        top = np.argpartition(logits, len(logits) - n)[len(logits) - n :]
        self.data[:n] = source.data[top]
        self.data["p"][:n] = 0.0
        self._reset(n)

    def allowed(self) -> int:
        """Count the tokens a grammar has not ruled out (logit not -inf)."""
        return int(np.count_nonzero(self.data["logit"][: self.array.size] != -np.inf))

    def selected(self) -> int:
        return int(self.data["id"][self.array.selected])


class _Single:
    """A one-token ``llama_token_data_array``: asks the grammar about one token."""

    def __init__(self) -> None:
        self.item = L.llama_token_data(0, 1.0, 0.0)
        self.array = L.llama_token_data_array(
            data=ctypes.pointer(self.item), size=1, selected=-1, sorted=False
        )
        self.ref = ctypes.byref(self.array)

    def allows(self, grammar: Any, token: int) -> bool:
        self.item.id = L.llama_token(token)
        self.item.logit = 1.0
        self.array.size = 1
        L.llama_sampler_apply(grammar, self.ref)
        return bool(self.item.logit != -np.inf)


class Decoder:
    """One llama.cpp context (one sequence): prompt processing and token-by-token decoding.

    Not thread-safe: the caller serialises use (one prediction at a time).
    The KV cache keeps the last prompt and reply, so a prompt that shares a
    prefix with the previous one only processes the rest (as LM Studio does).
    """

    def __init__(
        self, model: NativeModel, n_ctx: int, n_threads: int, flash_attention: bool | None = None
    ) -> None:
        self.ctx: Any = None
        self.model = model
        self.samplers: _Samplers | None = None
        self.grammar: Any = None
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = _BATCH
        params.n_ubatch = _BATCH
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        if flash_attention is not None:  # the load's flashAttention; else llama.cpp's "auto"
            params.flash_attn_type = (
                L.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if flash_attention
                else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        ctx = L.llama_init_from_model(model.model, params)
        if ctx is None:
            raise ValueError(f"llama.cpp could not create a context of {n_ctx} tokens")
        model.hold()
        self.ctx = ctx
        # llama.cpp may round the size up; the instance's context length is what we honour.
        self.n_ctx = min(n_ctx, L.llama_n_ctx(ctx))
        self.memory = L.llama_get_memory(ctx)
        self.cached: list[int] = []
        self.pending: list[int] = []  # prompt tokens `prefill` has still to process
        self.candidates = _Candidates(model.n_vocab)
        self.best = _Candidates(_BEST)
        self.single = _Single()
        self.grammar_first = False

    def close(self) -> None:
        """Free the context and samplers, then let go of the model's weights."""
        self._free_samplers()
        ctx, self.ctx = self.ctx, None
        if ctx is not None:
            L.llama_free(ctx)
            self.model.release()

    def __del__(self) -> None:
        self.close()

    def _free_samplers(self) -> None:
        if self.samplers is not None:
            self.samplers.free()
        if self.grammar:
            L.llama_sampler_free(self.grammar)
        self.samplers = self.grammar = None

    def _decode(self, tokens: list[int]) -> None:
        """Decode one batch (at most `_BATCH` tokens) and add it to the cache."""
        array = (L.llama_token * len(tokens))(*tokens)
        status = L.llama_decode(self.ctx, L.llama_batch_get_one(array, len(tokens)))
        if status != 0:
            self.cached = []
            L.llama_memory_clear(self.memory, True)
            raise RuntimeError(f"llama_decode failed with status {status}")
        self.cached.extend(tokens)

    def begin(
        self,
        prompt: list[int],
        sampling: Sampling,
        grammar: Any = None,
        *,
        grammar_first: bool = False,
    ) -> None:
        """Set up sampling and keep the cached prefix; the grammar sampler becomes ours to free.

        The rest of the prompt is processed by `prefill`. ``grammar_first`` masks
        the whole vocabulary with the grammar before every sample (llama-cpp-python's
        way); by default the sampled token is checked first and the full mask applied
        only when it is rejected (llama.cpp server's way).
        """
        self._free_samplers()
        self.samplers = _Samplers(self.model, sampling)
        self.samplers.remember_prompt(prompt)
        self.grammar = grammar
        self.grammar_first = grammar_first
        keep = 0
        for a, b in zip(self.cached, prompt[:-1], strict=False):
            if a != b:
                break
            keep += 1
        if keep < len(self.cached) and not L.llama_memory_seq_rm(self.memory, 0, keep, -1):
            L.llama_memory_clear(self.memory, True)
            keep = 0
        del self.cached[keep:]
        self.pending = prompt[keep:]

    def prefill(self) -> bool:
        """Process the next batch of the prompt; return whether more of it remains.

        One batch per call, so that a caller can stop between batches (a cancel),
        as llama.cpp's server does.
        """
        batch, self.pending = self.pending[:_BATCH], self.pending[_BATCH:]
        self._decode(batch)
        return bool(self.pending)

    def use_threads(self, n_threads: int) -> None:
        """Decode (and process prompts) with ``n_threads`` CPU threads from now on."""
        L.llama_set_n_threads(self.ctx, n_threads, n_threads)

    @property
    def threads(self) -> int:
        """The CPU threads decoding uses."""
        return int(L.llama_n_threads(self.ctx))

    def forget(self) -> None:
        """Empty the KV cache."""
        L.llama_memory_clear(self.memory, True)
        self.cached = []

    def sample(self) -> int:
        """Sample the next token from the last logits (grammar honoured); accept it.

        With a grammar, as llama.cpp's server does: sample without it, ask the
        grammar about that one token, and only when it is rejected sample again
        from the tokens the grammar allows (`_resample`). Under greedy decoding
        the result is the token full masking would give, at a fraction of the
        cost (masking checks every one of the vocabulary's tokens).
        """
        samplers = self.samplers
        assert samplers is not None
        cand = self.candidates
        cand.fill(L.llama_get_logits_ith(self.ctx, -1))
        grammar = self.grammar
        samplers.penalise(cand.ref)
        if grammar and self.grammar_first:
            L.llama_sampler_apply(grammar, cand.ref)
            _check_allowed(cand)
        samplers.pick(cand.ref)
        token = cand.selected()
        if grammar and not self.grammar_first and not self.single.allows(grammar, token):
            token = self._resample(samplers, grammar)
        if grammar:
            L.llama_sampler_accept(grammar, token)
        samplers.accept(token)
        return token

    def _resample(self, samplers: _Samplers, grammar: Any) -> int:
        """Sample from the grammar's tokens, as if the whole vocabulary had been masked.

        First only the `_BEST` highest-scoring tokens are checked against the
        grammar. That gives exactly the full mask's result when the sampler
        keeps only tokens from among them: greedy needs one allowed token there,
        top-k needs k of them (every allowed token outside scores lower, so it
        could not be kept). Otherwise the whole vocabulary is masked.
        """
        cand, best = self.candidates, self.best
        cand.fill(L.llama_get_logits_ith(self.ctx, -1))
        samplers.penalise(cand.ref)
        need = 1 if samplers.greedy else samplers.top_k
        if 0 < need <= _BEST:
            best.best_of(cand, _BEST)
            L.llama_sampler_apply(grammar, best.ref)
            if best.allowed() >= need:
                samplers.pick(best.ref)
                return best.selected()
        L.llama_sampler_apply(grammar, cand.ref)
        _check_allowed(cand)
        samplers.pick(cand.ref)
        return cand.selected()

    @property
    def full(self) -> bool:
        """Whether the reply ends before the sampled token is fed: it fills the context.

        As llama.cpp's server stops (``n_past + 1 >= n_ctx`` in ``process_token``): the
        prompt and the reply then hold exactly ``n_ctx`` tokens. Found by probes: the token
        sampled at the last position was counted too, one more than the context holds.
        """
        room: bool = len(self.cached) + 1 >= self.n_ctx
        return room

    def feed(self, token: int) -> None:
        """Decode one sampled token (so the next logits follow it)."""
        self._decode([token])


def _check_allowed(cand: _Candidates) -> None:
    """Raise `GrammarDeadEnd` if the grammar masked every candidate (the end included)."""
    if not cand.allowed():
        raise GrammarDeadEnd(
            "the grammar allows no token here, not even the end of the reply: it can "
            "neither go on nor end (a character class or literal no text can match?)"
        )


def embed(model: NativeModel, text: str, n_ctx: int, n_threads: int) -> list[float]:
    """Embed ``text``: pooled hidden states (mean pooling unless the GGUF names one), L2-normed."""
    tokens = model.tokenize(text, add_special=True)
    if len(tokens) > n_ctx:  # before the context: one sized for the input could be gigabytes
        raise ValueError(embedding_overflow(len(tokens), n_ctx))
    params = L.llama_context_default_params()
    params.n_ctx = max(n_ctx, len(tokens) + 1)
    params.n_batch = params.n_ubatch = max(512, len(tokens) + 1)
    params.n_threads = params.n_threads_batch = n_threads
    params.embeddings = True
    params.no_perf = True
    if model.pooling is None:
        params.pooling_type = L.LLAMA_POOLING_TYPE_MEAN
    ctx = L.llama_init_from_model(model.model, params)
    if ctx is None:
        raise ValueError("llama.cpp could not create an embedding context")
    try:
        array = (L.llama_token * len(tokens))(*tokens)
        status = L.llama_decode(ctx, L.llama_batch_get_one(array, len(tokens)))
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
        pointer = L.llama_get_embeddings_seq(ctx, 0)
        vector = np.ctypeslib.as_array(pointer, shape=(model.n_embd,)).astype(np.float64)
    finally:
        L.llama_free(ctx)
    norm = float(np.linalg.norm(vector)) or 1.0
    return [float(v) for v in vector / norm]
