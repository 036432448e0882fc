"""Fixtures for the grammar-mode tests: llama.cpp's grammar code, when installed."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness

LLAMA_MISSING = any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "gguf"))


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaGrammarHarness]:
    """llama.cpp's grammar parser and matcher over a byte-level, vocab-only GGUF."""
    if LLAMA_MISSING:
        pytest.skip(
            "llama_cpp (or gguf) is not importable: install the grammar-tests extra "
            '(pip install -e ".[grammar-tests]") to run the differential tests'
        )
    from ._llama_harness import LlamaGrammarHarness, write_byte_vocab

    path = tmp_path_factory.mktemp("vocab") / "bytes.gguf"
    write_byte_vocab(path)
    harness = LlamaGrammarHarness(path)
    yield harness
    harness.close()
