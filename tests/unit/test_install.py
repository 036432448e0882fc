"""The install line the messages give for an extra: this copy's own source, as pip recorded it.

Found by an audit of the messages: they said ``pip install "outlines-lmstudio[testing]"``,
which fails (the package is on no index: docs/getting-started.md) or installs another
package of that name.
"""

from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from outlines_lmstudio import _install
from outlines_lmstudio._install import install_command


class _Distribution:
    def __init__(self, direct_url: str | None) -> None:
        self._direct_url = direct_url

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self._direct_url


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    _install._source.cache_clear()
    yield
    _install._source.cache_clear()


def _installed(monkeypatch: pytest.MonkeyPatch, record: object) -> None:
    text = None if record is None else record if isinstance(record, str) else json.dumps(record)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: _Distribution(text))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (  # pip install -e /home/me/outlines-lmstudio
            {"url": "file:///home/me/outlines-lmstudio", "dir_info": {"editable": True}},
            'pip install -e "/home/me/outlines-lmstudio[testing]"',
        ),
        (  # pip install /home/me/outlines-lmstudio
            {"url": "file:///home/me/outlines-lmstudio", "dir_info": {}},
            'pip install "/home/me/outlines-lmstudio[testing]"',
        ),
        (  # a path with a space, as pip writes it in the URL
            {"url": "file:///home/me/my%20code/ol", "dir_info": {}},
            'pip install "/home/me/my code/ol[testing]"',
        ),
        (  # a wheel
            {
                "url": "file:///tmp/dist/outlines_lmstudio-0.1.0-py3-none-any.whl",
                "archive_info": {},
            },
            'pip install "/tmp/dist/outlines_lmstudio-0.1.0-py3-none-any.whl[testing]"',
        ),
        (
            {
                "url": "https://github.com/o/outlines-lmstudio",
                "vcs_info": {"vcs": "git", "commit_id": "abc123"},
            },
            'pip install "outlines-lmstudio[testing] @ git+https://github.com/o/outlines-lmstudio@abc123"',
        ),
        (
            {"url": "https://example.com/outlines_lmstudio-0.1.0.tar.gz", "archive_info": {}},
            'pip install "outlines-lmstudio[testing] @ https://example.com/outlines_lmstudio-0.1.0.tar.gz"',
        ),
        (  # from a subdirectory of a repository (found by a review: it was left out)
            {
                "url": "https://github.com/o/mono",
                "vcs_info": {"vcs": "git", "commit_id": "abc"},
                "subdirectory": "py/ol",
            },
            'pip install "outlines-lmstudio[testing] @ git+https://github.com/o/mono@abc'
            '#subdirectory=py/ol"',
        ),
        (  # the subdirectory of a local checkout, and of an archive (mutation testing)
            {"url": "file:///home/me/mono", "dir_info": {}, "subdirectory": "py/ol"},
            'pip install "/home/me/mono/py/ol[testing]"',
        ),
        (
            {"url": "https://example.com/mono.tar.gz", "archive_info": {}, "subdirectory": "ol"},
            'pip install "outlines-lmstudio[testing] @ https://example.com/mono.tar.gz'
            '#subdirectory=ol"',
        ),
        (  # a share's server name is kept (found by a review)
            {"url": "file://server/share/ol", "dir_info": {}},
            'pip install "//server/share/ol[testing]"',
        ),
        (None, 'pip install "outlines-lmstudio[testing]"'),  # from an index: no record
        ("not json", 'pip install "outlines-lmstudio[testing]"'),
        ({"url": 5}, 'pip install "outlines-lmstudio[testing]"'),
    ],
)
def test_the_line_names_where_this_copy_came_from(
    monkeypatch: pytest.MonkeyPatch, record: object, expected: str
) -> None:
    _installed(monkeypatch, record)
    assert install_command("testing") == expected


def test_a_source_tree_run_without_installing_names_its_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    root = Path(_install.__file__).resolve().parents[2]
    assert (root / "pyproject.toml").is_file()  # this test runs from a checkout
    assert install_command("cli,local") == f'pip install -e "{root}[cli,local]"'


def test_a_copy_inside_another_project_does_not_name_that_project(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by a review: vendored into another project's ``src/``, the line named that
    project's checkout, which would install it instead."""

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    package = tmp_path / "other" / "src" / "outlines_lmstudio"
    package.mkdir(parents=True)
    (tmp_path / "other" / "pyproject.toml").write_text('[project]\nname = "other"\n')
    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr(_install, "__file__", str(package / "_install.py"))
    assert install_command("testing") == 'pip install "outlines-lmstudio[testing]"'


def test_this_environment_s_line_installs_from_a_real_source() -> None:
    """Not the package's bare name here (the test environment installs a checkout), and
    the path it names holds the project."""
    line = install_command("testing")
    assert line != 'pip install "outlines-lmstudio[testing]"'
    source = line.split('"')[1].removesuffix("[testing]")
    assert (Path(source) / "pyproject.toml").is_file() or source.endswith((".whl", ".tar.gz"))
