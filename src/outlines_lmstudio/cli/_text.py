"""Text from the command line and standard input: UTF-8, or a clear error.

Text arguments and standard input are read as UTF-8 whatever the locale (arguments in
`text_arguments_as_utf8`), with ``surrogateescape``: a byte that is not
UTF-8 becomes a lone surrogate, which would be sent to LM Studio as garbage or fail deep
inside a request. It is refused here, naming the byte, before anything is sent.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from ._common import CliError

__all__ = [
    "check_options_text",
    "check_text",
    "decode_file",
    "read_file",
    "PROMPT_LIMIT",
    "INPUT_LIMIT",
    "SCHEMA_LIMIT",
    "read_stdin",
    "read_stdin_bytes",
    "stdin_lines_tolerant",
    "text_arguments_as_utf8",
    "as_utf8",
]

_FIX = "convert it to UTF-8 first (e.g. `iconv -f latin1 -t utf-8`)"
_NUL = (
    "it is binary data, or UTF-16 or UTF-32 text. Give UTF-8 text (e.g. `iconv -f utf-16le "
    "-t utf-8`)."
)

# What a file or standard input may hold (found by a probe: `--schema /dev/zero` read until
# the machine ran out of memory, deaf to Ctrl-C and SIGTERM for the one long read). Each is
# far above any real use: LM Studio's longest contexts hold a few MB of text.
SCHEMA_LIMIT = 64 << 20
PROMPT_LIMIT = 64 << 20
INPUT_LIMIT = 1 << 30
_CHUNK = 1 << 20


def _too_large(name: str, limit: int, advice: str) -> CliError:
    return CliError(f"{name} holds more than {limit >> 20} MiB, the limit: {advice}")


def _read_bounded(handle: BinaryIO, limit: int, name: str, advice: str) -> bytes:
    """Read to the end in chunks (Ctrl-C is handled between them), at most ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while chunk := handle.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(name, limit, advice)
        parts.append(chunk)
    return b"".join(parts)


def read_file(path: Path, limit: int, name: str, advice: str) -> bytes:
    """Read a file (a regular one, a device, a pipe...), refusing more than ``limit`` bytes.

    Parameters
    ----------
    path
        The file.
    limit
        The most bytes it may hold.
    name
        The file as the messages name it.
    advice
        What to do when it holds more.

    Raises
    ------
    OSError
        If it cannot be opened or read.
    CliError
        If it holds more than ``limit`` bytes (a regular file's size is known at once).
    """
    with path.open("rb") as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise _too_large(name, limit, advice)
        return _read_bounded(handle, limit, name, advice)


def check_text(text: str, what: str) -> str:
    """Return ``text`` if it is valid Unicode, else refuse it.

    Parameters
    ----------
    text
        An argument, or a line read with ``surrogateescape``.
    what
        What it is, for the message (``PROMPT``, ``--system``...).

    Raises
    ------
    CliError
        If ``text`` holds a lone surrogate (a byte that was not UTF-8), or a NUL (binary
        data, or UTF-16 read as UTF-8: a review found `chat` sending such lines; no
        argument can hold one).
    """
    if text.startswith(("\udcff\udcfe", "\udcfe\udcff")):  # a UTF-16/32 mark, read as UTF-8
        # (a review: a chat line was called Latin-1, whose iconv command makes garbage)
        raise CliError(
            f"{what} is UTF-16 or UTF-32 text (it starts with a byte order mark): save it as "
            "UTF-8 (e.g. `iconv -f utf-16 -t utf-8`)."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        found = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise CliError(
            f"{what} is not UTF-8 text ({found} at character {exc.start + 1}): {_FIX}."
        ) from None
    if (nul := text.find("\x00")) >= 0:
        raise CliError(f"{what} holds a NUL (at character {nul + 1}): {_NUL}")
    return text


_TEXT_OPTIONS = {
    "system": "--system",
    "choice": "--choice",
    "regex": "--regex",
    "stop": "--stop",
    "model": "-m/--model",  # found by a probe: sent as is, then "not found" or status 3
}


_TEXT_ARGUMENTS = ("prompt", "texts", *_TEXT_OPTIONS)
"""The arguments that are text to send (not file paths, which stay as Python decoded them)."""


def text_arguments_as_utf8(args: argparse.Namespace) -> None:
    """Read the command line's text arguments as UTF-8, whatever the locale.

    Python decodes arguments with the locale's encoding: in the C locale with UTF-8 mode
    off (ASCII), each byte of ``é`` became a lone surrogate, and valid UTF-8 text was
    refused as not UTF-8 (found by a tester); in a latin-1 locale it became ``Ã©``. Their
    bytes are ``os.fsencode`` of each (the documented inverse, see `sys.argv`). Only text
    is read again, and only where its bytes are UTF-8: a file path stays as Python decoded
    it, which is how Python opens it (found by a review: re-read, ``--schema café.json``
    named no file), and text that is not UTF-8 (a latin-1 terminal's ``é``) stays as the
    locale read it; a byte the locale could not read stays a lone surrogate, which
    `check_text` refuses, naming it.
    """
    for dest in _TEXT_ARGUMENTS:
        value = getattr(args, dest, None)
        if isinstance(value, str):
            setattr(args, dest, as_utf8(value))
        elif isinstance(value, list):
            setattr(args, dest, [as_utf8(v) if isinstance(v, str) else v for v in value])


def as_utf8(text: str) -> str:
    """Return a command-line argument's text read as UTF-8 (see `text_arguments_as_utf8`)."""
    try:
        return os.fsencode(text).decode("utf-8")
    except UnicodeError:  # not UTF-8 (or put in sys.argv from Python): as the locale read it
        return text


def check_options_text(args: argparse.Namespace) -> None:
    """Refuse a text option (``--system``, ``-m``, ``--regex``...) that is not UTF-8.

    Raises
    ------
    CliError
        Naming the option.
    """
    for dest, option in _TEXT_OPTIONS.items():
        value = getattr(args, dest, None)
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_text(text, option)


def decode_file(data: bytes, name: str) -> str:
    """Decode a file's bytes as UTF-8, a leading byte order mark allowed (RFC 8259).

    Parameters
    ----------
    data
        The file's content.
    name
        The file's name, for the message.

    Raises
    ------
    CliError
        Naming the line and byte that is not UTF-8, and how to convert the file.
    """
    _refuse_wide(data, name)
    try:
        return data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, start) + 1
        raise CliError(
            f"{name}, line {line} is not UTF-8 text (the byte 0x{data[start]:02x}): {_FIX}."
        ) from None


def _refuse_wide(data: bytes, name: str) -> None:
    """Refuse UTF-16 or UTF-32 text, named by its byte order mark or by its NUL bytes.

    Without a mark, such text (ASCII in UTF-16 is every other byte NUL) decodes as UTF-8:
    a schema got a JSON error, a prompt on standard input was sent with its NULs (found by
    a probe). Read as RFC 4627 reads a JSON text's first bytes, with `json.detect_encoding`;
    NUL bytes there are no text in UTF-8.
    """
    head = data[:4]
    # json's names: "utf-16-le" without a mark, which iconv writes "utf-16le" (its "utf-16"
    # reads a mark, or big-endian without one)
    found = json.detect_encoding(head) if b"\x00" in head and any(head) else ""
    # UTF-32's first: its little-endian mark starts with UTF-16's (found by a probe)
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        wide, source = "UTF-32", "utf-32"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        wide, source = "UTF-16", "utf-16"
    elif found.startswith(("utf-16", "utf-32")) and _nul_padded(data[:64], found):
        wide, source = found[:6].upper(), found.replace("-le", "le").replace("-be", "be")
    else:
        return
    raise CliError(f"{name} is {wide} text: save it as UTF-8 (e.g. `iconv -f {source} -t utf-8`).")


def _nul_padded(head: bytes, encoding: str) -> bool:
    r"""Whether ``head`` has the NUL bytes of mostly-Latin text in ``encoding`` (no mark).

    `json.detect_encoding` reads four bytes: ``a\x00b\n``, UTF-8 text with a NUL in it, was
    called UTF-16 (found by a probe). Latin text in UTF-16 has a NUL in nearly every unit.
    """
    width = 4 if encoding.startswith("utf-32") else 2
    units = [head[i : i + width] for i in range(0, len(head) - width + 1, width)]
    padded = sum(unit.count(0) >= width - 1 for unit in units)
    return bool(units) and padded >= 0.75 * len(units)


def read_stdin_bytes(
    what: str,
    limit: int = PROMPT_LIMIT,
    advice: str = "no model's context holds that much text: give a shorter one.",
) -> bytes:
    """Read standard input to its end, as bytes, refusing more than ``limit`` bytes.

    Parameters
    ----------
    what
        What is read, for the messages (``--input -``...).
    limit
        The most bytes it may hold.
    advice
        What to do when it holds more.

    Raises
    ------
    CliError
        If standard input is closed, or holds more than ``limit`` bytes.
    """
    if sys.stdin is None:
        raise CliError(
            f"{what} reads standard input, which is closed: pipe the text in "
            "(e.g. `echo hello | outlines-lmstudio ...`) or pass it as an argument."
        )
    buffer: BinaryIO | None = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # replaced by a text stream (main() called from Python)
        return check_text(sys.stdin.read(), f"Standard input ({what})").encode("utf-8")
    return _read_bounded(buffer, limit, f"Standard input ({what})", advice)


def read_stdin(what: str) -> str:
    r"""Read standard input to its end as UTF-8 (``\r\n`` and ``\r`` become ``\n``).

    A leading byte order mark (a file saved by a Windows editor) is not part of the text.

    Parameters
    ----------
    what
        What is read, for the messages (``PROMPT -``...).

    Raises
    ------
    CliError
        If standard input is closed or is not UTF-8 text.
    """
    raw = read_stdin_bytes(what)
    _refuse_wide(raw, f"Standard input ({what})")
    data = raw.removeprefix(codecs.BOM_UTF8)
    if (nul := data.find(b"\x00")) >= 0:
        # UTF-16 text without a mark whose first characters are not ASCII (a review: a
        # Russian prompt was sent with its NULs), or binary data; no argument holds a NUL.
        at = nul + 1 + len(raw) - len(data)
        raise CliError(f"Standard input ({what}) holds a NUL byte (byte {at}): {_NUL}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"Standard input ({what}) is not UTF-8 text (the byte 0x{data[exc.start]:02x} at "
            f"byte {exc.start + 1 + len(raw) - len(data)}): {_FIX}."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def stdin_lines_tolerant() -> None:
    """Make line reads from standard input UTF-8, keeping bytes that are not (for `check_text`).

    Read with the locale's encoding (ASCII in the C locale, or ``PYTHONIOENCODING=ascii``),
    valid UTF-8 lines were refused as not UTF-8 (found by a tester); `read_stdin` reads the
    bytes and decodes them as UTF-8 the same way.

    Raises
    ------
    CliError
        If standard input is closed.
    """
    if sys.stdin is None:
        raise CliError(
            "chat reads your messages from standard input, which is closed: run it in a "
            "terminal, or pipe the messages in."
        )
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
