"""Load: many predictions on one client, every result checked, no growth of fds, threads, memory."""

import asyncio
import concurrent.futures
import gc
import json
import os
import threading
from pathlib import Path

import lmstudio as lms
import pytest

from outlines_lmstudio import from_lmstudio
from outlines_lmstudio.testing import LMStudioEmulator

from .conftest import TEXT_MODEL

FIGURES = Path(__file__).parent.parent.parent / "benchmarks" / "results"


def resources() -> dict[str, int]:
    gc.collect()
    rss_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "rss_mib": rss_pages * os.sysconf("SC_PAGE_SIZE") // 2**20,
    }


def echo(emulator: LMStudioEmulator) -> None:
    emulator.script(TEXT_MODEL, lambda prediction: f"echo {prediction.last_user_text}")


def record(name: str, before: dict[str, int], after: dict[str, int], count: int) -> None:
    """Keep the figures for the reliability page, when OUTLINES_LMSTUDIO_FIGURES=1."""
    if os.environ.get("OUTLINES_LMSTUDIO_FIGURES") != "1":
        return
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / "load.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = {"predictions": count, "before": before, "after": after}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.mark.timeout(120)
def test_1000_sequential_predictions(client: lms.Client, emulator: LMStudioEmulator) -> None:
    echo(emulator)
    model = from_lmstudio(client, TEXT_MODEL)
    for i in range(20):  # warm up: sockets, handles, caches
        assert model(f"warm {i}") == f"echo warm {i}"
    before = resources()
    for i in range(1000):
        assert model(f"prompt {i}") == f"echo prompt {i}"
    after = resources()
    record("sync sequential", before, after, 1000)
    assert after["fds"] <= before["fds"] + 2
    assert after["threads"] <= before["threads"] + 1
    assert after["rss_mib"] <= before["rss_mib"] + 40


@pytest.mark.timeout(120)
def test_200_concurrent_threads(client: lms.Client, emulator: LMStudioEmulator) -> None:
    echo(emulator)
    model = from_lmstudio(client, TEXT_MODEL)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: model(f"warm {i}"), range(16)))
    before = resources()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: (i, model(f"prompt {i}")), range(200)))
    after = resources()
    record("sync 200 concurrent (16 threads)", before, after, 200)
    assert all(text == f"echo prompt {i}" for i, text in results)
    assert after["fds"] <= before["fds"] + 2
    assert after["threads"] <= before["threads"] + 1
    assert after["rss_mib"] <= before["rss_mib"] + 40
    assert emulator.peak_concurrency(TEXT_MODEL) <= 4  # LM Studio's slots queue the rest


@pytest.mark.timeout(120)
@pytest.mark.asyncio
async def test_200_concurrent_tasks(
    async_client: lms.AsyncClient, emulator: LMStudioEmulator
) -> None:
    echo(emulator)
    model = from_lmstudio(async_client, TEXT_MODEL)
    await asyncio.gather(*(model(f"warm {i}") for i in range(16)))
    before = resources()
    results = await asyncio.gather(*(model(f"prompt {i}") for i in range(200)))
    batch = await model.batch([f"batch {i}" for i in range(200)], max_concurrency=16)
    after = resources()
    record("async 200 concurrent tasks + batch of 200", before, after, 400)
    assert results == [f"echo prompt {i}" for i in range(200)]
    assert batch == [f"echo batch {i}" for i in range(200)]
    assert after["fds"] <= before["fds"] + 2
    assert after["threads"] <= before["threads"] + 1
    assert after["rss_mib"] <= before["rss_mib"] + 40
