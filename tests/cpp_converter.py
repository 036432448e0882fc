"""llama.cpp's C++ JSON-schema converter, when a build of it is given (optional checks).

``LLAMA_JSON_SCHEMA_TO_GRAMMAR`` points at a build (tests/unit/grammar/cpp/README.md) that
reads one schema per line and writes ``OK <grammar>`` or ``ERR <why>``.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

__all__ = ["CPP_CONVERTER", "run_cpp_converter", "run_cpp_converter_lines"]

CPP_CONVERTER = os.environ.get("LLAMA_JSON_SCHEMA_TO_GRAMMAR")
"""The build's path, or None: the checks that need it are left out."""


def run_cpp_converter(schema: Any) -> subprocess.CompletedProcess[str]:
    """Run the C++ converter's build on one schema: ``OK <grammar>`` or ``ERR <why>``."""
    assert CPP_CONVERTER is not None
    return subprocess.run(
        [CPP_CONVERTER],
        input=json.dumps(schema) + "\n",
        capture_output=True,
        text=True,
        errors="surrogateescape",  # a grammar with a character cut in two: its bytes kept
        timeout=20,
        check=True,
    )


def run_cpp_converter_lines(schemas: list[Any]) -> list[str]:
    """Run the build once on many schemas: each one's ``OK <grammar>`` or ``ERR <why>``.

    The build writes a grammar's line breaks as ``\x01``, so each answer is one line.
    """
    assert CPP_CONVERTER is not None
    done = subprocess.run(
        [CPP_CONVERTER],
        input="".join(json.dumps(schema) + "\n" for schema in schemas),
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=60,
        check=True,
    )
    answers = done.stdout.split("\n")[: len(schemas)]
    assert len(answers) == len(schemas), done.stdout[-200:]
    return answers
