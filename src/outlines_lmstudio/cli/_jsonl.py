"""The files of ``extract``: reading the input, resuming and appending the output.

Input: one JSON object per line, ``{"id": str|int, "prompt": str, "images": [path...]}``
(other keys are ignored; blank lines are skipped; image paths are relative to the
input file's directory). Output: one JSON object per line, ``{"id": ..., "result": ...}``
or ``{"id": ..., "error": {"type": ..., "message": ...}}``. Each line is written with
one ``write`` to a file opened for appending, so a line is complete or absent; a
partial last line (a crash of the machine mid-write) is cut off when resuming.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._common import CliError

__all__ = ["Item", "OutputFile", "item_key", "read_items"]


@dataclass(frozen=True)
class Item:
    """One input line."""

    id: str | int
    prompt: str
    images: list[Path] = field(default_factory=list)
    line: int = 0


def item_key(item_id: object) -> str:
    """Return a key telling ids apart (``1`` and ``"1"`` are different ids)."""
    return json.dumps(item_id)


def _valid_id(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def read_items(path: Path) -> list[Item]:
    """Read and check the whole input before any work starts.

    Raises
    ------
    CliError
        On the first malformed line, or a repeated id, naming the line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CliError(f"Cannot read input {str(path)!r}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"Cannot read input {str(path)!r}: {exc}") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{path}, line {number}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno}). Each line must "
                'be an object like {"id": "a1", "prompt": "..."}; fix or remove that line.'
            ) from None
        if not isinstance(data, dict):
            raise CliError(
                f'{where} is a JSON {type(data).__name__}, not an object {{"id", "prompt"}}.'
            )
        if not _valid_id(data.get("id")):
            raise CliError(f'{where} needs an "id" (a string or an integer).')
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise CliError(f'{where} needs a non-empty "prompt" string.')
        images = data.get("images", [])
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise CliError(f'{where}: "images" must be a list of file paths.')
        key = item_key(data["id"])
        if key in seen:
            raise CliError(
                f"{where} repeats the id {data['id']!r} of line {seen[key]}: ids must be unique."
            )
        seen[key] = number
        paths = [path.parent / Path(i).expanduser() for i in images]
        items.append(Item(data["id"], prompt, paths, number))
    return items


class OutputFile:
    """The output file: what it already holds, and appending whole lines.

    Parameters
    ----------
    path
        The output ``.jsonl`` file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self._fd: int | None = None

    def scan(self) -> str | None:
        """Read the ids already answered; cut off a partial last line.

        Returns
        -------
        str | None
            A note about a repaired partial line, if there was one.

        Raises
        ------
        CliError
            If a complete line is not an output record (probably the wrong file).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CliError(f"Cannot read output {str(self.path)!r}: {exc}") from None
        note = None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            # A partial line: never a result. Cut it off so the next line starts clean.
            with self.path.open("r+b") as handle:
                handle.truncate(end)
            note = f"Removed an incomplete last line from {self.path} (it was never a result)."
        for number, raw in enumerate(data[:end].splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if (
                not isinstance(record, dict)
                or "id" not in record
                or not ("result" in record or "error" in record)
            ):
                raise CliError(
                    f"{self.path}, line {number} is not an extract result "
                    '({"id", "result"} or {"id", "error"}): is this the right --output file?'
                )
            key = item_key(record["id"])
            (self.failed if "error" in record else self.done).add(key)
        self.failed -= self.done
        return note

    def drop_errors(self) -> int:
        """Rewrite the file without its error lines (atomically); return how many went."""
        if not self.failed:
            return 0
        kept: list[bytes] = []
        for raw in self.path.read_bytes().splitlines(keepends=True):
            record = json.loads(raw) if raw.strip() else None
            if isinstance(record, dict) and "error" in record:
                continue
            kept.append(raw)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        count = len(self.failed)
        self.failed.clear()
        return count

    def open(self) -> None:
        """Open for appending (creating the file).

        Raises
        ------
        CliError
            If it cannot be opened.
        """
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CliError(f"Cannot write output {str(self.path)!r}: {exc.strerror}.") from None

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line, in one write, and push it to the OS."""
        assert self._fd is not None, "open() first"
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
