"""Ctrl-C in an extract run: the number of finished items told is what the output holds.

No server: the job is a plain function, the output a real ``OutputFile``. Ctrl-C is raised
right after a line is written, the moment at which the main thread once counted a line it
had just written as unfinished (a CI run saw "Interrupted: 1" with 2 lines in the file).
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any, cast

import pytest

from outlines_lmstudio.cli._common import EXIT_INTERRUPTED, CliError
from outlines_lmstudio.cli._extract import _process
from outlines_lmstudio.cli._jsonl import Item, OutputFile


class _CtrlCAfterWrite(OutputFile):
    """An output file at which Ctrl-C comes just after its ``at``-th line is written."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__(path)
        self.at = at
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        super().append(record)
        self.written += 1
        if self.written == self.at:
            signal.raise_signal(signal.SIGINT)


def _job(item: Item) -> dict[str, Any]:
    if item.id == "slow":
        threading.Event().wait(0.2)  # finishes after the Ctrl-C: must not be written
    return {"id": item.id, "result": {"n": item.prompt}}


@pytest.mark.usefixtures("sigint_default")
@pytest.mark.parametrize("at", [1, 2, 3])
def test_the_count_told_is_the_lines_written(tmp_path: Path, at: int) -> None:
    path = tmp_path / "out.jsonl"
    output = _CtrlCAfterWrite(path, at)
    output.scan(tmp_path / "in.jsonl")
    output.open()
    items = [Item("slow", "late")] + [Item(f"item-{i}", str(i)) for i in range(at)]
    try:
        with pytest.raises(CliError) as raised:
            _process(cast(Any, _job), items, output, concurrency=2)
        threading.Event().wait(0.4)  # the slow item has finished by now
    finally:
        output.close()
    written = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["id"] for r in written) == [f"item-{i}" for i in range(at)]
    assert raised.value.code == EXIT_INTERRUPTED
    assert raised.value.message.startswith(f"Interrupted: {at} items finished and written to")
