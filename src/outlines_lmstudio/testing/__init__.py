"""An LM Studio server emulator that the unmodified ``lmstudio`` SDK talks to.

Install it with ``pip install "outlines-lmstudio[testing]"``. Use it as a
context manager, with `LMStudioEmulator.start` / `LMStudioEmulator.stop`, or
through the ``lmstudio_emulator`` pytest fixture::

    import lmstudio as lms
    from outlines_lmstudio.testing import LMStudioEmulator

    with LMStudioEmulator() as emu, lms.Client(emu.api_host) as client:
        model = client.llm.model("qwen2.5-7b-instruct")
        print(model.respond("Hello").content)
"""

from __future__ import annotations

from outlines_lmstudio.testing._catalogue import EmulatedModel, default_models
from outlines_lmstudio.testing._embedded import (
    EMBEDDED_MODEL_KEY,
    embedded_available,
    embedded_model,
)
from outlines_lmstudio.testing._faults import Fault
from outlines_lmstudio.testing._reasoning_forms import ReasoningReply, reasoning_models
from outlines_lmstudio.testing._records import Frame, Prediction, RecordedRequest, Upload
from outlines_lmstudio.testing._server import EmulatorExposedWarning, LMStudioEmulator
from outlines_lmstudio.testing._tools import ToolCall

# Importing this package needs only the core dependencies; `LMStudioEmulator.start`
# checks for the ``testing`` extra (websockets, outlines-core) and names the install line.

__all__ = [
    "EMBEDDED_MODEL_KEY",
    "EmulatedModel",
    "EmulatorExposedWarning",
    "Fault",
    "Frame",
    "LMStudioEmulator",
    "Prediction",
    "ReasoningReply",
    "RecordedRequest",
    "ToolCall",
    "Upload",
    "default_models",
    "embedded_available",
    "embedded_model",
    "reasoning_models",
]
