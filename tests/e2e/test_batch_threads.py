"""Sync batches reuse the model's threads, and never share them with a batch running already."""

import lmstudio as lms

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio._common import NO_ARGS
from outlines_lmstudio._config import parse_inference_kwargs
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL


def test_batches_reuse_one_pool_of_the_asked_size(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda p: p.last_user_text.upper())
    model = from_lmstudio(client, TEXT_MODEL)
    assert model.batch(["a", "b", "c"]) == ["A", "B", "C"]
    pool = model._batches.pool
    assert pool is not None
    assert model.batch(["d", "e"]) == ["D", "E"]
    assert model._batches.pool is pool  # kept from batch to batch
    assert model.batch(["f", "g"], max_concurrency=2) == ["F", "G"]
    assert model._batches.pool is not pool  # another limit: a pool of that size
    assert model._batches.size == 2


def test_a_batch_during_a_batch_gets_its_own_threads(
    client: lms.Client, emulator: LMStudioEmulator
) -> None:
    emulator.script(TEXT_MODEL, lambda p: p.last_user_text.upper())
    model = from_lmstudio(client, TEXT_MODEL, max_concurrency=2)
    with model._batches._lock:  # as while another thread's (or an outer) batch runs
        assert model.batch([f"y{i}" for i in range(5)]) == [f"Y{i}" for i in range(5)]
    assert model._batches.pool is None  # it used threads of its own, gone with it


def test_no_keywords_is_what_parsing_no_keywords_gives() -> None:
    assert parse_inference_kwargs({}) == NO_ARGS
