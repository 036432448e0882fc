"""The pip command that adds an extra to this installed copy of the package.

The package is not on a package index (docs/getting-started.md): it is installed from a
checkout or a wheel, so ``pip install "outlines-lmstudio[testing]"`` fails ("No matching
distribution"), or installs another package of that name. The messages that say how to add
an extra name this copy's own source instead, as pip recorded it (PEP 610's
``direct_url.json``): the checkout (``-e`` if editable), the wheel or sdist file, or the VCS
URL; the package's name where pip recorded none (an index install). Hand-written: neither
pip nor ``importlib.metadata`` turns that record into an install command. Found by an audit
of the messages.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["install_command"]

NAME = "outlines-lmstudio"


def install_command(extras: str) -> str:
    """Return the pip command that installs this copy of the package with ``extras``.

    Parameters
    ----------
    extras
        The extras, comma-separated (``"testing"``, ``"cli,local"``).

    Examples
    --------
    >>> install_command("testing")  # doctest: +SKIP
    'pip install -e "/home/me/outlines-lmstudio[testing]"'
    """
    editable, source = _source()
    if source is None:
        return f'pip install "{NAME}[{extras}]"'
    if "://" in source:  # a URL: a requirement that names it
        return f'pip install "{NAME}[{extras}] @ {source}"'
    return f'pip install {"-e " if editable else ""}"{source}[{extras}]"'


@functools.cache
def _source() -> tuple[bool, str | None]:
    """Return whether this copy is editable, and where it came from (``None``: an index)."""
    try:
        text = importlib.metadata.distribution(NAME).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH)
        root = Path(__file__).resolve().parents[2]
        return (True, str(root)) if _is_this_project(root / "pyproject.toml") else (False, None)
    try:
        record = json.loads(text or "null")
    except ValueError:
        return False, None
    url = record.get("url") if isinstance(record, dict) else None
    if not isinstance(url, str):
        return False, None
    subdirectory = record.get("subdirectory")
    where = f"#subdirectory={subdirectory}" if isinstance(subdirectory, str) else ""
    vcs = record.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        commit = vcs.get("commit_id")
        revision = f"@{commit}" if isinstance(commit, str) else ""
        return False, f"{vcs['vcs']}+{url}{revision}{where}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "file":
        return False, url + where
    dir_info = record.get("dir_info")
    editable = isinstance(dir_info, dict) and dir_info.get("editable") is True
    server = "" if parts.netloc in ("", "localhost") else f"//{parts.netloc}"  # a share
    path = urllib.request.url2pathname(server + parts.path)
    return editable, f"{path}/{subdirectory}" if isinstance(subdirectory, str) else path


def _is_this_project(pyproject: Path) -> bool:
    """Whether ``pyproject`` is this project's (not another's that holds a copy of it)."""
    try:
        with pyproject.open("rb") as file:
            project: object = tomllib.load(file).get("project")
    except (OSError, ValueError):
        return False
    return isinstance(project, dict) and project.get("name") == NAME
