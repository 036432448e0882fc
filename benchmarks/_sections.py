"""The real-engine benchmarks' output: their JSON results and their section of the docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DOCS", "publish", "replace_section"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(name: str, heading: str, text: str, docs: Path = DOCS) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->``.

    The markers (under ``heading``) are appended to the file when it has none yet;
    nothing outside them changes.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = docs.read_text(encoding="utf-8")
    block = f"{start}\n{text}\n{end}"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        content = before + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    docs.write_text(content, encoding="utf-8")


def publish(
    result: dict[str, Any], results: Path, text: str, section: tuple[str, str] | None
) -> None:
    """Write ``result`` as JSON to ``results`` and print its table ``text``.

    With a ``section`` (``(name, heading)``, as for `replace_section`), the table also goes
    into the docs.
    """
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(text)
    if section is not None:
        replace_section(*section, text)
