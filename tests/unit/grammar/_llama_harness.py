"""Run llama.cpp's own grammar code on GBNF text and strings, without model weights.

How: a vocab-only GGUF is written at test time with the ``gguf`` package. Its vocabulary
is a SentencePiece ("llama") one made of the 256 byte tokens ``<0x00>``..``<0xFF>`` plus
``<unk>``, ``<s>`` and ``</s>``, so any UTF-8 string is a token sequence (one token per
byte; llama.cpp's grammar handles partial UTF-8 across tokens). llama.cpp loads it with
``vocab_only=True``. A grammar sampler (``llama_sampler_init_grammar``: llama.cpp's own
parser and matcher, the code LM Studio's llama.cpp engine runs) then decides, byte by byte,
whether each token is allowed (``llama_sampler_apply`` sets a rejected token's logit to
-inf) and accepts it; at the end the string is in the language exactly when the
end-of-generation token is allowed. A token is only accepted after the sampler allowed it,
so llama.cpp never reaches its "empty grammar stack" abort.
"""

from __future__ import annotations

import ctypes
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gguf
import llama_cpp.llama_cpp as lib
import numpy as np

__all__ = ["GrammarError", "LlamaGrammarHarness"]

_N_SPECIAL = 3  # <unk>, <s>, </s>
_EOS = 2


class GrammarError(ValueError):
    """llama.cpp refused to parse a grammar; carries llama.cpp's log lines."""


def write_byte_vocab(
    path: Path,
    *,
    arch: str = "llama",
    context_length: int | None = 512,
    shards: int = 1,
) -> None:
    """Write a vocab-only GGUF whose tokens are the 256 bytes (plus three specials).

    Its metadata is a model's (``context_length``, which llama.cpp requires, unless
    ``None``); it has no weights, but for ``shards`` > 1 one small tensor per shard, in
    llama.cpp's split files (``path`` then names ``PREFIX-00001-of-0000N.gguf``).
    """
    writer = gguf.GGUFWriter(str(path), arch=arch, split_max_tensors=1 if shards > 1 else 0)
    if context_length is not None:
        writer.add_context_length(context_length)
    for shard in range(shards if shards > 1 else 0):
        writer.add_tensor(f"filler.{shard}", np.zeros(1024 * (shard + 1), dtype=np.float32))
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    types = [
        gguf.TokenType.UNKNOWN,
        gguf.TokenType.CONTROL,
        gguf.TokenType.CONTROL,
    ] + [gguf.TokenType.BYTE] * 256
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(_EOS)
    writer.add_add_bos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


_CALLBACKS: list[Any] = []
"""Every log callback a harness made, referenced until the process ends (see above)."""


class LlamaGrammarHarness:
    """Parse GBNF and match strings with llama.cpp's grammar sampler."""

    def __init__(self, vocab_path: Path) -> None:
        self._log: list[str] = []
        self._lock = threading.Lock()
        # llama.cpp keeps one log callback for the process and calls it from C: a callback
        # freed while set crashes the next log line anywhere in the process (the emulator's
        # model loads in later tests died with SIGSEGV). Ours lives as long as the process,
        # and the previous one is set back on close.
        self._callback = lib.llama_log_callback(self._on_log)
        _CALLBACKS.append(self._callback)
        self._previous = (lib.llama_log_callback(), ctypes.c_void_p())
        lib.llama_log_get(ctypes.byref(self._previous[0]), ctypes.byref(self._previous[1]))
        lib.llama_log_set(self._callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.vocab_only = True
        self._model = lib.llama_model_load_from_file(str(vocab_path).encode(), params)
        if not self._model:
            raise RuntimeError("llama.cpp could not load the vocab-only GGUF: " + self.log())
        self._vocab = lib.llama_model_get_vocab(self._model)
        if lib.llama_vocab_eos(self._vocab) != _EOS:
            raise RuntimeError("unexpected EOS token id in the test vocabulary")
        self._cache: dict[str, Any] = {}

    def _on_log(self, level: int, text: bytes | None, user_data: Any) -> None:
        if text:
            self._log.append(text.decode("utf-8", "replace"))

    def log(self) -> str:
        return "".join(self._log[-20:])

    def close(self) -> None:
        for sampler in self._cache.values():
            lib.llama_sampler_free(sampler)
        self._cache.clear()
        lib.llama_model_free(self._model)
        lib.llama_log_set(*self._previous)

    def _pristine(self, gbnf: str) -> Any:
        if gbnf not in self._cache:
            self._log.clear()
            data = gbnf.encode("utf-8", "surrogateescape")  # a cut character's bytes
            sampler = lib.llama_sampler_init_grammar(self._vocab, data, b"root")
            if not sampler:
                raise GrammarError("llama.cpp rejected the grammar: " + self.log())
            self._cache[gbnf] = sampler
        return self._cache[gbnf]

    def check_parses(self, gbnf: str) -> None:
        """Raise `GrammarError` unless llama.cpp parses ``gbnf`` with a ``root`` rule."""
        with self._lock:
            self._pristine(gbnf)

    @contextmanager
    def _fresh(self, gbnf: str) -> Iterator[Any]:
        sampler = lib.llama_sampler_clone(self._pristine(gbnf))
        try:
            yield sampler
        finally:
            lib.llama_sampler_free(sampler)

    @staticmethod
    def _allowed(sampler: Any, token: int) -> bool:
        data = (lib.llama_token_data * 1)(lib.llama_token_data(token, 0.0, 0.0))
        array = lib.llama_token_data_array(data, 1, -1, False)
        lib.llama_sampler_apply(sampler, ctypes.byref(array))
        return not math.isinf(data[0].logit)

    def assert_language(self, gbnf: str, taken: list[str], refused: list[str]) -> None:
        """Assert that the grammar takes every text of ``taken`` and none of ``refused``."""
        for text in taken:
            assert self.matches(gbnf, text), (text, gbnf)
        for text in refused:
            assert not self.matches(gbnf, text), (text, gbnf)

    def matches(self, gbnf: str, text: str) -> bool:
        """Whether llama.cpp's matcher accepts exactly ``text`` (then end of generation)."""
        if "\x00" in text:
            raise ValueError("llama.cpp cannot represent NUL in a token piece")
        with self._lock, self._fresh(gbnf) as sampler:
            for byte in text.encode("utf-8"):
                token = _N_SPECIAL + byte
                if not self._allowed(sampler, token):
                    return False
                lib.llama_sampler_accept(sampler, token)
            return self._allowed(sampler, _EOS)
