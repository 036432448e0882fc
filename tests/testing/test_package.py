"""The package's public surface."""

from __future__ import annotations

import outlines_lmstudio.testing as testing
from outlines_lmstudio.testing import EmulatedModel, LMStudioEmulator, default_models


def test_all_is_sorted_and_complete() -> None:
    assert testing.__all__ == sorted(testing.__all__)
    for name in testing.__all__:
        assert getattr(testing, name) is not None
    # ("@py_*" names come from pytest rewriting the plugin's package.)
    public = {n for n in dir(testing) if n[0] not in "_@"} - {"annotations"}
    assert public - set(testing.__all__) <= {"pytest_plugin"}


def test_default_catalogue() -> None:
    models = {m.key: m for m in default_models()}
    assert models["qwen2.5-7b-instruct"].tool_use
    assert models["qwen2.5-7b-instruct"].loaded
    assert models["qwen2-vl-2b-instruct"].vision
    assert models["llama-3.2-1b-instruct-mlx"].format == "safetensors"
    assert models["text-embedding-nomic-embed-text-v1.5"].type == "embedding"
    assert not models["gemma-3-1b-it"].loaded


def test_constructor_validation() -> None:
    import pytest

    with pytest.raises(ValueError, match="slots"):
        LMStudioEmulator(slots=0)
    with pytest.raises(ValueError, match="unknown_endpoint"):
        LMStudioEmulator(unknown_endpoint="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        LMStudioEmulator([EmulatedModel("a"), EmulatedModel("a")])
    with pytest.raises(RuntimeError, match="not running"):
        _ = LMStudioEmulator().api_host
