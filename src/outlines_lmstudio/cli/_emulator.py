"""``outlines-lmstudio emulator``: re-exports `outlines_lmstudio.testing._command`."""

from __future__ import annotations

from outlines_lmstudio.testing._command import (
    HELP,
    add_arguments,
    gguf_models,
    load_models,
    run,
)

__all__ = ["HELP", "add_arguments", "gguf_models", "load_models", "run"]
