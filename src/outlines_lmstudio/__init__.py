"""LM Studio as a first-class backend for Outlines structured generation.

```python
import lmstudio as lms
import outlines
from outlines_lmstudio import from_lmstudio

model = from_lmstudio(lms.Client(), "qwen2.5-7b-instruct")
generator = outlines.Generator(model, Person)
```
"""

from ._adapter import LMStudioTypeAdapter
from ._models import AsyncLMStudio, LMStudio, from_lmstudio
from .errors import (
    BatchGenerationError,
    EmptyAnswerError,
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
    UnsupportedGrammarError,
    UnsupportedInputError,
    UnsupportedOutputTypeError,
)

__all__ = [
    "AsyncLMStudio",
    "BatchGenerationError",
    "EmptyAnswerError",
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
    "ReasoningTruncatedError",
    "TruncatedOutputError",
    "UnsupportedGrammarError",
    "UnsupportedInputError",
    "UnsupportedOutputTypeError",
    "from_lmstudio",
]
