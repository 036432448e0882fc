"""LM Studio as a first-class backend for Outlines structured generation.

```python
import lmstudio as lms
import outlines
from pydantic import BaseModel

from outlines_lmstudio import from_lmstudio


class Person(BaseModel):
    name: str
    age: int


model = from_lmstudio(lms.Client(), "qwen2.5-7b-instruct")
generator = outlines.Generator(model, Person)
generator("Extract the person: John is 32")  # JSON text, valid for Person
model.parse("Ann is 25", Person)  # a validated Person instance
```

The model classes load Outlines and the ``lmstudio`` SDK (about half a second) when first
used, not when the package is imported: the command line's commands that do not need them,
and every pytest run in an environment where this package's pytest plugin is installed, start
without them. ``from outlines_lmstudio import from_lmstudio`` loads them as before.

PYTEST_DONT_REWRITE: the package ships a pytest plugin, so pytest marks it all for its
assertion rewriting, and warns ("Module already imported so cannot be rewritten") when a
program imported it before ``pytest.main``: an error under ``filterwarnings = ["error"]``.
The marker above tells pytest to leave the package alone.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any

if TYPE_CHECKING:
    from ._adapter import LMStudioTypeAdapter
    from ._api import AsyncReplyStream, ReplyStream, SyncReplyStream
    from ._async import AsyncLMStudio
    from ._models import from_lmstudio
    from ._reply import Parsed, Reply, ReplyChunk, ReplyStats
    from ._sync import LMStudio
    from .errors import (
        BatchGenerationError,
        EmptyAnswerError,
        InvalidClientError,
        InvalidImageError,
        InvalidInferenceArgumentError,
        InvalidInferenceValueError,
        InvalidPromptError,
        InvalidSchemaError,
        LMStudioConnectionError,
        LMStudioModelNotFoundError,
        LMStudioPredictionError,
        LMStudioTimeoutError,
        OutlinesLMStudioError,
        ParseError,
        ReasoningTruncatedError,
        TruncatedOutputError,
        UnknownSettingError,
        UnsupportedGrammarError,
        UnsupportedInputError,
        UnsupportedOutputTypeError,
    )

    __version__: str

# PEP 562 lazy attributes: a dozen lines, so no lazy-loading dependency for them.
_LAZY = {
    "LMStudioTypeAdapter": "._adapter",
    "AsyncLMStudio": "._async",
    "LMStudio": "._sync",
    "from_lmstudio": "._models",
    "Parsed": "._reply",
    "Reply": "._reply",
    "ReplyChunk": "._reply",
    "ReplyStats": "._reply",
    "ReplyStream": "._api",
    "SyncReplyStream": "._api",
    "AsyncReplyStream": "._api",
    # The errors load the lmstudio SDK (about 150 ms): four of them are also its exceptions.
    "BatchGenerationError": ".errors",
    "EmptyAnswerError": ".errors",
    "InvalidClientError": ".errors",
    "InvalidImageError": ".errors",
    "InvalidInferenceArgumentError": ".errors",
    "InvalidInferenceValueError": ".errors",
    "InvalidPromptError": ".errors",
    "InvalidSchemaError": ".errors",
    "LMStudioConnectionError": ".errors",
    "LMStudioModelNotFoundError": ".errors",
    "LMStudioPredictionError": ".errors",
    "LMStudioTimeoutError": ".errors",
    "OutlinesLMStudioError": ".errors",
    "ParseError": ".errors",
    "ReasoningTruncatedError": ".errors",
    "TruncatedOutputError": ".errors",
    "UnknownSettingError": ".errors",
    "UnsupportedGrammarError": ".errors",
    "UnsupportedInputError": ".errors",
    "UnsupportedOutputTypeError": ".errors",
}

__all__ = [
    "AsyncLMStudio",
    "AsyncReplyStream",
    "BatchGenerationError",
    "EmptyAnswerError",
    "InvalidClientError",
    "InvalidImageError",
    "InvalidInferenceArgumentError",
    "InvalidInferenceValueError",
    "InvalidPromptError",
    "InvalidSchemaError",
    "LMStudio",
    "LMStudioConnectionError",
    "LMStudioModelNotFoundError",
    "LMStudioPredictionError",
    "LMStudioTimeoutError",
    "LMStudioTypeAdapter",
    "OutlinesLMStudioError",
    "ParseError",
    "Parsed",
    "ReasoningTruncatedError",
    "Reply",
    "ReplyChunk",
    "ReplyStats",
    "ReplyStream",
    "SyncReplyStream",
    "TruncatedOutputError",
    "UnknownSettingError",
    "UnsupportedGrammarError",
    "UnsupportedInputError",
    "UnsupportedOutputTypeError",
    "from_lmstudio",
]


def _version() -> str:
    """Return the installed distribution's version (``__version__``), read on first use.

    ``importlib.metadata`` is not imported with the package: ``import outlines_lmstudio``
    stays cheap. Without the distribution's metadata (the source tree on ``sys.path``, not
    installed) the version is ``0+unknown``, which PEP 440 tools still parse.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("outlines-lmstudio")
    except PackageNotFoundError:
        value = "0+unknown"
    globals()["__version__"] = value
    return value


def _lazy_attribute(name: str) -> _Any:
    """Import a model class or ``from_lmstudio``, or read ``__version__``, on first use (PEP 562).

    Bound as the module's ``__getattr__`` only at run time: a type checker that sees a
    module ``__getattr__`` takes every name as defined (``from outlines_lmstudio import
    from_lmstudo`` passed mypy; found by a probe), and the lazy names are declared for it
    under ``TYPE_CHECKING`` above.
    """
    if name == "__version__":
        return _version()
    if name == "errors":  # the public submodule, an attribute once imported (as before)
        return _importlib.import_module(".errors", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module != "._reply":
        # The two heavy dependencies load here, from a shallow frame, before our modules
        # ask for them. On CPython 3.11, importing them from inside our model modules'
        # import chain (a dozen frames deeper) made `re`'s parser, running for a
        # dependency's patterns, cross a boundary of the interpreter's 16 KiB frame-stack
        # chunks on every call: about 2,600 mmap/munmap pairs and some 20 ms of a
        # 450 ms cold import, counted with `strace -e trace=mmap` (633 mmaps for
        # `import outlines, lmstudio`, 3,245 before this line and 394 with it). Which
        # depth thrashes is chance; this one is measured (`benchmarks/imports.py`).
        # The errors need only lmstudio: four of them derive from its exceptions.
        import lmstudio  # noqa: F401

        if module != ".errors":
            import outlines  # noqa: F401
    try:
        value = getattr(_importlib.import_module(module, __name__), name)
    except AttributeError as exc:
        # An AttributeError leaving a module ``__getattr__`` means "no such name": ``from
        # outlines_lmstudio import from_lmstudio`` turned one raised while importing the
        # model modules (``os.register_at_fork`` on Windows, found by a probe) into a bare
        # "cannot import name" with no cause. Any other error passes through as it is.
        raise ImportError(
            f"cannot import name {name!r} from {__name__!r}: importing "
            f"{__name__}{module} failed with {type(exc).__name__}: {exc}",
            name=__name__,
        ) from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    # The submodule and the version, both read on first use (`_lazy_attribute`); not the
    # name `from __future__ import annotations` leaves (found by a probe: "annotations" was
    # listed, and "__version__" not).
    return sorted(({*globals(), *__all__, "errors", "__version__"}) - {"annotations"})


if not TYPE_CHECKING:
    __getattr__ = _lazy_attribute
del TYPE_CHECKING  # the package's names are its own (`dir`), as in its testing package
