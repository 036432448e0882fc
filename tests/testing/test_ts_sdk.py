"""Conformance: LM Studio's TypeScript SDK (1.5.0 and 2.0.0) against the emulator.

The TypeScript SDK validates every frame with zod, so it sees what the real server sends
today. One node process per SDK version runs every scenario of ``ts_sdk/scenarios.cjs``
against one emulator (drift guard on). ``scripts/ts-sdk.sh`` installs the pinned SDKs into
``~/.cache/outlines-lmstudio/ts-sdk/<version>``; this module calls it when one is missing.
Without node the tests skip, except under ``CI=true``, where a missing node fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from outlines_lmstudio.testing import LMStudioEmulator

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("ts_sdk") / "scenarios.cjs"
VERSIONS = ("1.5.0", "2.0.0")
SCENARIOS = (
    "list",
    "model_handle_and_info",
    "respond_plain",
    "respond_streamed",
    "respond_json_schema",
    "respond_json_mode",
    "respond_gbnf",
    "complete",
    "cancel",
    "unload_during_prediction",
    "abort_signal",
    "max_tokens",
    "stop_strings",
    "image_on_vision_model",
    "image_on_text_model",
    "file_path",
    "embeddings",
    "tokenize",
    "prompt_template",
    "load_and_unload",
    "load_abort",
    "get_or_load",
    "bad_keys",
    "concurrent_predictions",
    "max_parallel_predictions",
    "act_with_tool",
    "tool_choice",
    "processing_state",
    "system_info",
    "experiment_flags",
    "diagnostics_logs",
    "when_disconnected",
    "system_notify",
    "model_variants",
    "base_prediction_config",
    "unknown_draft_model",
    "preload_draft_model",
)


def _need_node() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        reason = "node and npm are needed for the TypeScript SDK conformance suite"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI=true: install node 20", pytrace=False)
        pytest.skip(reason)
    return node


def _install(version: str) -> Path:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ts-sdk.sh"), version],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/ts-sdk.sh {version} failed:\n{result.stderr[-3000:]}", pytrace=False)
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=VERSIONS)
def ts_results(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]], str]:
    """Run every scenario with one SDK version; map scenario name -> result."""
    node = _need_node()
    version: str = request.param
    sdk_dir = _install(version)
    # Loads take 0.3 s, so that a load can be aborted while it runs.
    with LMStudioEmulator(validate_frames=True, load_latency=0.3) as emulator:
        result = subprocess.run(
            [node, str(SCRIPT), str(sdk_dir), emulator.api_host],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        violations = emulator.protocol_violations
        trace = emulator.format_trace(last=40)
    results: dict[str, dict[str, Any]] = {}
    done = False
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        if "name" in entry:
            results[entry["name"]] = entry
        done = done or entry.get("done", False)
    assert done, f"the node run did not finish:\n{result.stdout}\n{result.stderr[-3000:]}\n{trace}"
    assert violations == [], f"frames that break the Python SDK's schemas: {violations[:10]}"
    return version, results, trace


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_typescript_sdk_scenario(
    ts_results: tuple[str, dict[str, dict[str, Any]], str], scenario: str
) -> None:
    version, results, trace = ts_results
    assert scenario in results, f"@lmstudio/sdk {version}: scenario {scenario!r} did not run"
    entry = results[scenario]
    assert entry["ok"], f"@lmstudio/sdk {version}, {scenario}:\n{entry['detail']}\n{trace}"


def test_the_scenario_list_is_complete() -> None:
    # Every scenario of the node script is listed here, so each one is a reported test.
    defined = re.findall(r"^  async (\w+)\(client\) \{", SCRIPT.read_text("utf-8"), re.M)
    assert sorted(defined) == sorted(SCENARIOS)


def test_docs_count_the_scenarios() -> None:
    # Found by a probe: docs/testing.md said 31 scenarios after five more were added.
    doc = (ROOT / "docs" / "testing.md").read_text("utf-8")
    assert f"`tests/testing/test_ts_sdk.py` runs {len(SCENARIOS)} everyday" in doc
