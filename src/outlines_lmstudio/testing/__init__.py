"""An LM Studio server emulator that the unmodified ``lmstudio`` SDK talks to.

Install it with ``pip install "/path/to/outlines-lmstudio[testing]"``. Use it as a
context manager, with `LMStudioEmulator.start` / `LMStudioEmulator.stop`, or
through the ``lmstudio_emulator`` pytest fixture::

    import lmstudio as lms
    from outlines_lmstudio.testing import LMStudioEmulator

    with LMStudioEmulator() as emu, lms.Client(emu.api_host) as client:
        model = client.llm.model("qwen2.5-7b-instruct")
        print(model.respond("Hello").content)
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any

if TYPE_CHECKING:
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
# Its names are imported on first use (PEP 562): the pytest plugin, which pytest loads in
# every session of an environment that has the package, imports this package first, and
# importing every module here cost about 50 ms (asyncio and the catalogue) per session of
# projects that never use the emulator (found by a probe).
_LAZY = {
    "EmulatedModel": "._catalogue",
    "default_models": "._catalogue",
    "EMBEDDED_MODEL_KEY": "._embedded",
    "embedded_available": "._embedded",
    "embedded_model": "._embedded",
    "Fault": "._faults",
    "ReasoningReply": "._reasoning_forms",
    "reasoning_models": "._reasoning_forms",
    "Frame": "._records",
    "Prediction": "._records",
    "RecordedRequest": "._records",
    "Upload": "._records",
    "EmulatorExposedWarning": "._server",
    "LMStudioEmulator": "._server",
    "ToolCall": "._tools",
}

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


def _lazy_attribute(name: str) -> _Any:
    """Import one of the package's names from its module on first use (PEP 562).

    Bound as the module's ``__getattr__`` at run time only, as in ``outlines_lmstudio``:
    a type checker that sees a module ``__getattr__`` takes every name as defined.
    """
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if not TYPE_CHECKING:
    __getattr__ = _lazy_attribute
del TYPE_CHECKING  # the package's names are its own (`dir`), as before they were lazy
