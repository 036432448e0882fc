"""Replace one marked section of ``docs/benchmarks.md`` (the real-engine benchmarks' own)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["DOCS", "replace_section"]

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
