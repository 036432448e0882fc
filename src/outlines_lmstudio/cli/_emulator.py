"""``outlines-lmstudio emulator``: re-exports `outlines_lmstudio.testing._command`."""

from __future__ import annotations

from outlines_lmstudio.testing._command import HELP, add_arguments, load_models, run

__all__ = ["HELP", "add_arguments", "load_models", "run"]
