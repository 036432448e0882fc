"""The files of ``extract``: reading the input, resuming and appending the output.

Input: one JSON object per line, ``{"id": str|int, "prompt": str, "images": [path...]}``
(other keys are ignored, but a near miss of one of these is refused; blank lines are
skipped; a line ends at a newline, with or without a carriage return, never at U+2028
and the like; image paths are relative to the input file's directory; ``--input -`` reads
standard input, its image paths relative to the current directory). Output: one JSON
object per line, ``{"id": ..., "result": ...}`` or ``{"id": ..., "error": {"type": ...,
"message": ...}}``. Each line is written with one ``write`` to a file opened for
appending, so a line is complete or absent; a partial last line (a crash of the machine
mid-write) is cut off when resuming.

An existing output file is never opened for writing unless it is recognisably this
command's own output (`scan_output`, pure): empty, or every line a record. Files are
compared by device and inode, so a hard link or symlink to the input is refused.
``--output -``, ``/dev/stdout`` and any non-regular file (a pipe, a terminal) are
streams: written to, never read to resume and never cut.

A run holds an exclusive advisory lock (``flock``) on its output file from the scan
to the end, so a second ``extract`` on the same file refuses instead of writing every
record twice. Where there is no ``fcntl`` module (Windows) the run takes no lock and
says so (`locks`, `NO_LOCK_NOTE`).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import secrets
import stat
import sys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .._json_keys import RepeatedKey, without_repeats
from ._common import CliError, json_escaped, set_mode
from ._output_types import json_text
from ._text import INPUT_LIMIT, decode_file, read_file, read_stdin_bytes

__all__ = [
    "NO_LOCK_NOTE",
    "STDIN",
    "Item",
    "OutputFile",
    "OutputScan",
    "item_key",
    "locks",
    "read_items",
    "scan_output",
]


STDIN = "-"
"""``--input -``: the items are read from standard input."""


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


def _check_unicode(where: str, name: str, values: list[Any]) -> None:
    r"""Refuse a string with a lone surrogate (``"\ud800"``): it cannot be sent or written."""
    for value in values:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise CliError(
                    f'{where}: "{name}" has a lone surrogate ({value[exc.start]!r}), which is '
                    "not valid Unicode: fix that line."
                ) from None


_KEYS = ("id", "prompt", "images")
_LIKE = dict.fromkeys(("image", "img", "imgs", "image_path", "image_paths"), "images")
"""An image's usual names that `difflib` does not find close enough to ``images``."""


def _refuse_near_misses(where: str, data: dict[str, Any]) -> None:
    """Refuse a key that stands for one `extract` reads, where the line lacks that one.

    Other keys are ignored (a line may carry data of its own), but ``"image"``, ``"Images"``
    or ``"imgaes"`` for ``"images"`` left the item's image out without a word (found by a
    probe). A key is taken for one it reads by its name (in any case, around spaces, a
    near spelling or an image's usual name) and its value, which must be what that key
    takes: ``"n_images": 0``, ``"imagesize": [1, 2]`` and ``"image": null`` are a line's
    own data (a review found them refused by a match on names alone).
    """
    for key, value in data.items():
        meant = _meant(key)
        if meant is None or meant == key or meant in data or not _takes(meant, value):
            continue
        raise CliError(
            f"{where} has the key {key!r}, which extract does not read: did you mean "
            f'"{meant}"? Rename it (keys other than id, prompt and images are ignored).'
        )


@functools.lru_cache(maxsize=1024)
def _meant(key: str) -> str | None:
    """Return the key `extract` reads that ``key`` stands for, if any (see `_refuse_near_misses`).

    Kept per name: the lines of a file repeat their keys, and `difflib` for each key of each
    line made reading 100,000 lines of five keys take 5.0 s (0.9 s kept, 0.8 s unchecked).
    """
    name = key.strip().lower()
    return _LIKE.get(name) or next(
        iter(difflib.get_close_matches(name, _KEYS, n=1, cutoff=0.8)), None
    )


def _takes(key: str, value: object) -> bool:
    """Whether ``value`` is of what `extract` reads under ``key``."""
    if key == "images":
        paths = value if isinstance(value, list) else [value]
        return bool(paths) and all(isinstance(path, str) for path in paths)
    if key == "prompt":
        return isinstance(value, str)
    return isinstance(value, str | int) and not isinstance(value, bool)


def read_items(path: Path) -> list[Item]:
    """Read and check the whole input before any work starts.

    Parameters
    ----------
    path
        The input file; ``-`` reads standard input (image paths are then relative to
        the current directory).

    Raises
    ------
    CliError
        On the first malformed line, or a repeated id, naming the line.
    """
    if str(path) == STDIN:
        name, folder = "standard input (--input -)", Path()
        data = read_stdin_bytes("--input -", INPUT_LIMIT, _SPLIT)
    else:
        name, folder = str(path), path.parent
        try:
            data = read_file(path, INPUT_LIMIT, f"Input {str(path)!r}", _SPLIT)
        except FileNotFoundError:
            raise CliError(
                f"Cannot read input {str(path)!r}: no such file (--input - reads standard input)."
            ) from None
        except OSError as exc:
            raise CliError(f"Cannot read input {str(path)!r}: {exc.strerror or exc}.") from None
    text = decode_file(data, name)
    # Lines end at "\n" only: U+2028, U+0085... are valid inside a JSON string.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    items: list[Item] = []
    seen: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        where = f"{name}, line {number}"
        try:
            data = json.loads(text, object_pairs_hook=without_repeats)
        except RepeatedKey as exc:
            raise CliError(
                f"{where} has the key {exc.args[0]!r} twice; JSON would keep only the last "
                "value: remove one."
            ) from None
        except json.JSONDecodeError as exc:
            if text.startswith("\ufeff"):  # json's own words: "decode using utf-8-sig"
                raise CliError(
                    f"{where} starts with a byte order mark (U+FEFF; files joined with cat?): "
                    "remove it."
                ) from None
            raise CliError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno}). Each line must "
                'be an object like {"id": "a1", "prompt": "..."}; fix or remove that line.'
            ) from None
        except RecursionError:
            raise CliError(f"{where} is JSON nested too deeply to read.") from None
        except ValueError:  # only Python's limit on integer digits is left
            raise CliError(
                f"{where} has an integer of more than {sys.get_int_max_str_digits()} digits, "
                "too long to read: shorten it (an id may be a string)."
            ) from None
        if not isinstance(data, dict):
            raise CliError(
                f'{where} is a JSON {type(data).__name__}, not an object {{"id", "prompt"}}.'
            )
        _refuse_near_misses(where, data)
        if not _valid_id(data.get("id")):
            if "id" in data:  # found by a probe: 1.0 or true was said to be no id at all
                from outlines_lmstudio._config import shortened

                shown = shortened(json.dumps(data["id"], ensure_ascii=False))
                raise CliError(
                    f'{where} has the "id" {shown}, which is neither a string nor an integer: '
                    'write it as one ("1.0" or 1).'
                )
            raise CliError(f'{where} needs an "id" (a string or an integer).')
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise CliError(f'{where} needs a non-empty "prompt" string.')
        images = data.get("images", [])
        if isinstance(images, str):
            images = [images]
        if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
            raise CliError(f'{where}: "images" must be a list of file paths (none empty).')
        _check_unicode(where, "id", [data["id"]])
        _check_unicode(where, "prompt", [prompt])
        _check_unicode(where, "images", images)
        key = item_key(data["id"])
        if key in seen:
            raise CliError(
                f"{where} repeats the id {data['id']!r} of line {seen[key]}: ids must be unique."
            )
        seen[key] = number
        try:
            paths = [folder / Path(i).expanduser() for i in images]
        except (RuntimeError, ValueError) as exc:  # "~nouser/a.png", "~a\x00b": a probe
            raise CliError(f'{where}: an "images" path cannot be read: {exc}.') from None
        items.append(Item(data["id"], prompt, paths, number))
    return items


RECORD_PREFIX = b'{"id": '
"""How every output line starts (``json.dumps`` of a dict whose first key is ``id``)."""
# Windows opens a descriptor in text mode unless told: "\n" written as "\r\n", and read
# back as "\n", so the offsets a scan found no longer matched the file, and repairing an
# incomplete last line cut finished results off (found by a probe). 0 elsewhere.
_BINARY = getattr(os, "O_BINARY", 0)
_SPLIT = "split it into smaller files (each run's --output keeps what is done)."
_STREAM_PATHS = ("-", "/dev/stdout", "/dev/stderr")
_STREAM_DIRS = ("/dev/fd/", "/proc/self/fd/")


@dataclass(frozen=True)
class OutputScan:
    """What an existing output file holds.

    Attributes
    ----------
    done
        Keys (`item_key`) of the ids with a result.
    failed
        Keys of the ids whose only lines are errors.
    keep
        Bytes to keep: the file's length, or less to cut off a partial last line.
    newline
        Whether the kept part ends without a newline (a whole record was the last line,
        its newline never written): the next record must start with one.
    """

    done: frozenset[str]
    failed: frozenset[str]
    keep: int
    newline: bool = False


def _whole_json(raw: bytes) -> bool:
    """Whether ``raw`` is one whole JSON document."""
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def _is_record(raw: bytes) -> tuple[str, bool] | None:
    """Return ``(id key, is error)`` for an output line, ``None`` for anything else."""
    try:
        # UTF-8 only (a leading BOM allowed): json.loads guesses UTF-16 and UTF-32 from
        # bytes, and a Notepad "Unicode" file was taken, then appended to in UTF-8 (a probe)
        record = json.loads(raw.decode("utf-8-sig"))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        return None
    if not isinstance(record, dict) or "id" not in record:
        return None
    if ("result" in record) == ("error" in record):
        return None
    return item_key(record["id"]), "error" in record


def scan_output(data: bytes, name: str) -> OutputScan:
    """Check that ``data`` is an extract output and read which ids it answers (pure).

    Parameters
    ----------
    data
        The whole content of the existing output file.
    name
        The file's name, for messages.

    Returns
    -------
    OutputScan
        The answered ids, and how much of the file to keep.

    Raises
    ------
    CliError
        If any complete line is not an output record, or the last line (without a
        newline) is not one cut mid-write (it does not start like a record, or it is whole
        JSON that is not one): then it is not this command's output.
    """
    end = data.rfind(b"\n") + 1
    done: set[str] = set()
    failed: set[str] = set()
    # Lines end at "\n" ("\r\n" too), as the input's: splitlines() also ended them at a
    # bare "\r", where the last line was found by its "\n" alone, so records joined by "\r"
    # were taken for one line cut mid-write, and cut off (found by a probe).
    for number, line in enumerate(data[:end].split(b"\n"), start=1):
        raw = line.removesuffix(b"\r")
        if not raw.strip():
            continue
        parsed = _is_record(raw)
        if parsed is None:
            raise CliError(
                f"{name}, line {number} is not an extract result "
                '({"id", "result"} or {"id", "error"}): is this the right --output file? '
                "It was left untouched."
            )
        (failed if parsed[1] else done).add(parsed[0])
    tail = data[end:]
    if tail and (parsed := _is_record(tail)) is not None:  # whole, only its newline missing
        (failed if parsed[1] else done).add(parsed[0])
        return OutputScan(frozenset(done), frozenset(failed - done), len(data), newline=True)
    # Not a record cut mid-write, so not ours: a line that does not start like a record, or
    # one that does and is whole (a JSON document written without a newline by json.dump:
    # found by a probe, where such a file was cut to nothing).
    # A crash can also cut a record within its first bytes (`{"id`), or leave a tail of NUL
    # bytes after our records (file systems pad so): both were refused as another program's
    # file, where the docs promise a partial last line is cut off (found by a probe). A file
    # of NULs alone is not taken for ours.
    core = tail.rstrip(b"\x00")
    if (core and RECORD_PREFIX.startswith(core)) or (not core and (end or not tail)):
        return OutputScan(frozenset(done), frozenset(failed - done), end)
    # A raw "\r" is never inside a record this command writes (JSON escapes it).
    if not tail.startswith(RECORD_PREFIX) or b"\r" in tail or _whole_json(tail):
        if not end:
            raise CliError(
                f"{name} is not an extract output (its only line is not a result): is this the "
                "right --output file? It was left untouched."
            )
        raise CliError(
            f"{name}, last line (without a newline) is not an extract result: is this the "
            "right --output file? It was left untouched."
        )
    return OutputScan(frozenset(done), frozenset(failed - done), end)


@functools.cache
def _fcntl() -> ModuleType | None:
    """Return the ``fcntl`` module, or None where there is none (Windows).

    Imported here, not at the top: a missing ``fcntl`` stopped every command of the CLI,
    ``--help`` included, on Windows (found by a probe). Windows' own lock
    (``msvcrt.locking``) is a mandatory lock on a byte range, not an advisory lock on the
    file; a stand-in built on it could not be tried on Windows here, so a run there says
    that it takes no lock instead (`NO_LOCK_NOTE`).
    """
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def locks() -> bool:
    """Tell whether ``extract`` can lock its output file on this platform."""
    return _fcntl() is not None


NO_LOCK_NOTE = (
    "Note: this platform has no advisory file locks (fcntl), so extract cannot stop a "
    "second run on the same --output file: run one extract per output file at a time."
)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _may_write(path: Path, mode: int = os.W_OK) -> bool:
    """Whether this process may write ``path`` (``mode``), as its effective user.

    The effective user is the one that writes (a setuid wrapper's); ``os.access`` asks for
    the real one unless told otherwise, where the system can.
    """
    effective = os.access in os.supports_effective_ids
    return os.access(path, mode, effective_ids=effective)


class OutputFile:
    """The output: what it already holds, and appending whole lines.

    Parameters
    ----------
    path
        The output ``.jsonl`` file (created if missing), or a stream (``-``,
        ``/dev/stdout``, a pipe...).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.stream = str(path) in _STREAM_PATHS or str(path).startswith(_STREAM_DIRS)
        self._existing: tuple[int, int] | None = None
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._created: tuple[int, int] | None = None  # the file the scan made, if it did
        self._newline = False
        self._terminal = False

    def __enter__(self) -> OutputFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _busy(self) -> CliError:
        return CliError(
            f"{self.path} is being written by another extract run (it holds the file's lock): "
            "wait for it to finish, or pick another --output file."
        )

    def _lock(self, fd: int) -> None:
        """Take the run's exclusive lock on ``fd``'s file, or refuse if another run has it."""
        fcntl = _fcntl()
        if fcntl is None:  # Windows: `extract` says it runs without the lock
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None

    def _locked_elsewhere(self) -> bool:
        """Whether another process holds the lock of the file now at ``path``."""
        fcntl = _fcntl()
        if fcntl is None:  # pragma: no cover - Windows, and a file that appeared since the scan
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | _BINARY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _refuse_input(self, identity: tuple[int, int], source: tuple[int, int] | None) -> None:
        if identity == source:
            raise CliError(
                f"--output {str(self.path)!r} is the input file (the same file on disk, "
                "perhaps through a link): pick another output file."
            )

    def scan(self, source: Path) -> str | None:
        """Check the output before anything is written; read the ids already answered.

        Parameters
        ----------
        source
            The input file (the output must not be the same file).

        Returns
        -------
        str | None
            A note about a repaired partial last line, if there was one.

        Raises
        ------
        CliError
            If the output is the input, is not this command's output, or cannot be read.
        """
        try:
            source_id: tuple[int, int] | None = _identity(
                os.fstat(sys.stdin.fileno()) if str(source) == STDIN else os.stat(source)
            )
        except (OSError, AttributeError, ValueError):  # no stdin, or not a real file
            source_id = None
        try:
            info = os.fstat(sys.stdout.fileno()) if str(self.path) == "-" else os.stat(self.path)
        except FileNotFoundError:
            if self.path.is_symlink():  # a new file is created exclusively: never through a link
                raise CliError(
                    f"--output {str(self.path)!r} is a symbolic link to "
                    f"{os.readlink(self.path)!r}, which does not exist: pass the target's path "
                    "as --output, or remove the link."
                ) from None
            if not self.path.parent.is_dir():  # say so now, not after connecting
                raise CliError(
                    f"Cannot write output {str(self.path)!r}: its folder "
                    f"{str(self.path.parent)!r} does not exist."
                ) from None
            self._create()
            return None
        except OSError as exc:
            raise CliError(f"Cannot use output {str(self.path)!r}: {exc.strerror}.") from None
        self._refuse_input(_identity(info), source_id)
        if self.stream or not stat.S_ISREG(info.st_mode):
            self.stream = True  # a pipe, a terminal, /dev/null...: write only
            return None
        try:
            self._lock_fd = os.open(self.path, os.O_RDONLY | _BINARY)
            self._lock(self._lock_fd)
            identity = _identity(os.fstat(self._lock_fd))
            with open(self._lock_fd, "rb", closefd=False) as handle:
                data = handle.read()
        except OSError as exc:
            raise CliError(f"Cannot read output {str(self.path)!r}: {exc.strerror}.") from None
        self._refuse_input(identity, source_id)
        found = scan_output(data, str(self.path))
        self._existing = identity
        self.done, self.failed = set(found.done), set(found.failed)
        self._newline = found.newline
        if found.keep == len(data):
            return None
        # A partial last line of our own output: never a result. Cut it off.
        try:
            with open(self.path, "r+b") as handle:
                self._same(handle.fileno())
                handle.truncate(found.keep)
        except OSError as exc:
            raise CliError(
                f"Cannot repair output {str(self.path)!r} (it ends in an incomplete line): "
                f"{exc.strerror}."
            ) from None
        return f"Removed an incomplete last line from {self.path} (it was never a result)."

    def _create(self) -> None:
        """Make the new output file now, empty and locked, so that another run is refused at once.

        Found by a probe: made only once the model was ready, a second run on the same new
        file was refused after it had looked up the model (and, with ``--local``, loaded
        it). `close` removes it again if the run stops before `open` (LM Studio or the model
        not found, Ctrl-C), which made no file before. A file that cannot be made here is
        left to `check_writable` and `open`, which say why.
        """
        try:
            fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _BINARY, 0o644
            )
        except FileExistsError:
            raise self._appeared() from None
        except OSError:
            return
        self._fd = fd
        try:
            self._lock(fd)  # another run that scanned it in the meantime has it: its file
        except BaseException:
            self.close()
            raise
        self._created = _identity(os.fstat(fd))

    def _appeared(self) -> CliError:
        if self._locked_elsewhere():
            return self._busy()
        return CliError(
            f"{self.path} appeared while extract was starting (another program?): "
            "run the command again."
        )

    def _same(self, fd: int) -> None:
        """Refuse a file that is not the one scanned (replaced in between)."""
        if _identity(os.fstat(fd)) != self._existing:
            raise CliError(
                f"{self.path} changed while extract was starting (another program?): "
                "run the command again."
            )

    @property
    def _rewritten(self) -> Path:
        """The file ``--retry-errors`` rewrites (through a symbolic link, its target)."""
        return Path(os.path.realpath(self.path))

    @property
    def terminal(self) -> bool:
        """Whether the output, once opened, is a terminal (``--output -`` on one)."""
        return self._terminal

    def check_writable(self, *, rewrite: bool) -> None:
        """Refuse an output this user cannot write, before anything is asked of LM Studio.

        Found by a probe: it was said once the model had been looked up (with ``--local``,
        loaded), and without naming the folder. ``os.access`` answers for this process's
        user (the effective one where the system can tell), and for a read-only file
        system. A stream is written as it is.

        Parameters
        ----------
        rewrite
            Whether the file is rewritten first (``--retry-errors``): a new file is then made
            next to the file a symbolic link points to, with the old one's mode, and appended
            to (found by a review: the link's own folder was checked, and a read-only file
            passed, then lost its error lines).

        Raises
        ------
        CliError
            If the file, or the folder a file is to be made in, is not writable.
        """
        if self.stream:
            return
        if self._existing is not None and not _may_write(self.path):
            raise CliError(
                f"Cannot write output {str(self.path)!r}: the file is not writable for this "
                "user (or is on a read-only file system)."
            )
        if self._existing is None or rewrite:
            folder = (self._rewritten if rewrite else self.path).parent
            if not _may_write(folder, os.W_OK | os.X_OK):
                raise CliError(
                    f"Cannot write output {str(self.path)!r}: no file can be made in its "
                    f"folder {str(folder)!r} (not writable for this user, or on a read-only "
                    "file system)."
                )

    def check_rewritable(self) -> None:
        """Refuse to rewrite a stream for ``--retry-errors`` (it is never read back).

        Raises
        ------
        CliError
            If the output is a stream.
        """
        if self.stream:
            raise CliError(
                f"--retry-errors needs an output file to rewrite; {self.path} is a stream."
            )

    def drop_errors(self, keys: Collection[str]) -> int:
        """Rewrite the file without the error lines of ``keys`` (atomically).

        Only ids whose lines are all errors are dropped (an id with a result is not
        redone); error lines of other ids, e.g. not in this run's input, stay.

        Parameters
        ----------
        keys
            The `item_key` of each id about to be redone (the ids of the input).

        Returns
        -------
        int
            How many ids had their error lines removed.

        Raises
        ------
        CliError
            For a stream (it is never read back), or if the file cannot be rewritten.
        """
        self.check_rewritable()
        redo = self.failed.intersection(keys)
        if not redo:
            return 0
        target = self._rewritten
        # A new name each time, created exclusively: a temporary file left by a run that
        # was killed while rewriting is not in the way of every later --retry-errors.
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(target, "rb") as handle:
                self._same(handle.fileno())
                mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
                kept = [
                    raw.rstrip(b"\n") + b"\n"
                    for raw in handle.read().splitlines(keepends=True)
                    if not ((parsed := _is_record(raw)) and parsed[1] and parsed[0] in redo)
                ]
            locks = _fcntl() is not None
            with open(tmp, "xb") as out:
                self._lock(out.fileno())  # the new file is ours before it has the name
                out.writelines(kept)
                out.flush()
                set_mode(out.fileno(), tmp, mode)
                os.fsync(out.fileno())
                if locks:
                    os.replace(tmp, target)
                    lock_fd = os.dup(out.fileno())  # keeps the lock once `out` is closed
            self._release()
            if not locks:  # Windows: no lock to hand over, and no open file is renamed
                os.replace(tmp, target)
                lock_fd = os.open(target, os.O_RDONLY | _BINARY)
            self._lock_fd = lock_fd
            self._newline = False
            self._existing = _identity(os.fstat(lock_fd))
        except OSError as exc:
            if not isinstance(exc, FileExistsError):
                with contextlib.suppress(OSError):  # e.g. a read-only file system
                    tmp.unlink(missing_ok=True)
            raise CliError(
                f"Cannot rewrite {str(self.path)!r} without its error lines "
                f"({exc.filename or self.path}: {exc.strerror}); the file is unchanged."
            ) from None
        except BaseException:  # Ctrl-C mid-rewrite: the output is unchanged; leave no litter
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        self.failed -= redo
        return len(redo)

    def open(self) -> None:
        """Open for appending: the scanned file, a new file, or the stream.

        Raises
        ------
        CliError
            If it cannot be opened, or the file is not the one scanned.
        """
        try:
            if self._fd is not None:  # the new file, made by the scan: still at its path?
                try:
                    moved = _identity(os.stat(self.path)) != self._created
                except FileNotFoundError:
                    moved = True
                if moved:
                    raise CliError(
                        f"{self.path} was removed or replaced while extract was starting "
                        "(another program?): run the command again."
                    )
                self._created = None  # opened: kept, as a file made here always was
            elif str(self.path) == "-":
                self._fd = os.dup(sys.stdout.fileno())
            elif self.stream:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _BINARY)
            elif self._existing is None:
                # New file: O_EXCL, so a file that appeared since the scan is never written.
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | _BINARY, 0o644
                )
                self._lock(self._fd)
            else:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _BINARY)
                self._same(self._fd)
            self._terminal = os.isatty(self._fd)
        except FileExistsError:
            raise self._appeared() from None
        except OSError as exc:
            raise CliError(f"Cannot write output {str(self.path)!r}: {exc.strerror}.") from None
        except CliError:
            self.close()
            raise

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as one line, in one write, and push it to the OS.

        Raises
        ------
        CliError
            Naming the output, if it cannot be written (a full disk...). A reader of
            the stream that went away stays a ``BrokenPipeError`` (a quiet stop).
        """
        assert self._fd is not None, "open() first"
        text = json_text(record)
        if self._terminal:  # U+009B is a CSI to some terminals (found by a probe)
            text = json_escaped(text)
        data = (text + "\n").encode("utf-8")
        if self._newline:  # end the earlier last line, in the same write
            data = b"\n" + data
            self._newline = False
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BrokenPipeError:
            raise
        except OSError as exc:
            if len(view) < len(data):  # part of the line went out: a file takes it back
                self._take_back(len(data) - len(view), data.startswith(b"\n"))
            what = "standard output" if str(self.path) == "-" else f"output {str(self.path)!r}"
            raise CliError(f"Cannot write {what}: {exc.strerror}.") from None

    def _take_back(self, written: int, newline: bool) -> None:
        """Cut a line a failed write left half written (a full disk), if the output can be.

        Found by a probe: the output ended in a fragment no JSON reader takes, though "a
        line is complete JSON or absent". A stream cannot be cut: its reader has the bytes.
        """
        assert self._fd is not None
        with contextlib.suppress(OSError):
            found = os.fstat(self._fd)
            if stat.S_ISREG(found.st_mode):
                os.ftruncate(self._fd, found.st_size - written)
                self._newline = newline  # the earlier last line is unended again

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close(self) -> None:
        """Close the file and release its lock; remove a new file the run never opened."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                if self._created is not None:
                    with contextlib.suppress(OSError):
                        made = os.fstat(fd)
                        if made.st_size == 0 and _identity(os.stat(self.path)) == self._created:
                            os.unlink(self.path)  # before the lock goes: no run has it
            finally:
                os.close(fd)
        self._release()
