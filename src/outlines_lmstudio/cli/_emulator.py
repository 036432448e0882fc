"""``outlines-lmstudio emulator``: `outlines_lmstudio.testing._command`, with the CLI's checks.

The command itself, with its checks of the options, is shared with
``python -m outlines_lmstudio.testing``; here its errors are told the CLI's way (one
``outlines-lmstudio: error:`` line, status 2) and its warnings as one line, without a
source path.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import TextIO

from outlines_lmstudio.testing._command import HELP, add_arguments, gguf_models, load_models
from outlines_lmstudio.testing._command import run as _serve

__all__ = ["HELP", "add_arguments", "gguf_models", "load_models", "run"]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"outlines-lmstudio: warning: {message}", file=file or sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until Ctrl-C; return the exit status.

    Bad options (``--token-latency`` and the other latencies, ``--slots``, ``--port``,
    ``--models``) are one ``outlines-lmstudio: error:`` line and status 2; the notice of
    ``--allow-remote`` is one ``outlines-lmstudio: warning:`` line.
    """
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _serve(
            args,
            error_prefix="outlines-lmstudio: error: ",
            warning_prefix="outlines-lmstudio: warning: ",
        )
