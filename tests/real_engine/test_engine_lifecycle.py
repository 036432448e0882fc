"""The llama.cpp engine's lifecycle: models, contexts and predictions that outlive each other."""

from __future__ import annotations

from outlines_lmstudio.testing import LMStudioEmulator
from tests.real_engine.conftest import EMBEDDED_MODEL_KEY


def test_a_model_outlives_the_contexts_made_on_it(real_emulator: LMStudioEmulator) -> None:
    """A llama.cpp context borrows its model. The garbage collector finalises an unreachable
    engine's model and decoder in any order (a stopped emulator in a reference cycle): the
    weights were freed first, and freeing the context then read freed memory."""
    from outlines_lmstudio.testing._llama_native import Decoder, NativeModel

    gguf = real_emulator._catalogue.find_model(EMBEDDED_MODEL_KEY)
    assert gguf is not None
    assert gguf.gguf is not None
    model = NativeModel(str(gguf.gguf))
    decoder = Decoder(model, 64, 1)
    model.close()  # the order the garbage collector may take
    assert model.model is not None  # still under the live context
    decoder.close()
    assert model.model is None  # freed with the last context
