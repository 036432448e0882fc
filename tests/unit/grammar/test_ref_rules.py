"""References LM Studio's llama.cpp converter would give one grammar rule are told apart.

The C++ converter names a reference's rule after its path, each run of characters other
than letters, digits and ``-`` as one ``-``, and reuses a rule of that name: two Pydantic
models ``Pair_A`` and ``Pair__A`` got one rule (found by a probe: every reply on a GGUF
model failed validation). Each grammar here is matched by llama.cpp's own grammar code.
"""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from outlines_lmstudio._dialects import dialect_schema
from outlines_lmstudio.testing._llama import json_schema_grammar
from tests.e2e.test_schema_dialects import Both  # Pair_A and Pair__A

if TYPE_CHECKING:
    from ._llama_harness import LlamaGrammarHarness


def test_two_definitions_named_alike_keep_their_own_rules(llama: LlamaGrammarHarness) -> None:
    sent = dialect_schema(Both.model_json_schema(), "gguf")
    llama.assert_language(
        json_schema_grammar(sent),
        ['{"x": {"i": 1}, "y": {"s": "a"}}'],
        ['{"x": {"i": 1}, "y": {"i": 2}}'],
    )


@pytest.mark.parametrize("flags", [[], ["-O"]], ids=["plain", "python -O"])
def test_a_remote_reference_is_refused_and_never_fetched(flags: list[str]) -> None:
    """Found by a probe: the port refuses to fetch with an ``assert``, which ``python -O``
    drops; the emulator's real engine then fetched the URL a client sent, with no timeout."""
    pytest.importorskip("llama_cpp")
    code = (
        "import requests\n"
        "def fetch(url, *args, **kwargs):\n"
        "    raise SystemExit('fetched ' + url)\n"
        "requests.get = fetch\n"
        "from outlines_lmstudio.testing._llama import json_schema_grammar\n"
        "try:\n"
        "    json_schema_grammar({'properties': {'a': {'$ref': 'https://10.255.255.1/x.json'}}})\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    expected = "Fetching remote schemas is not allowed: https://10.255.255.1/x.json"
    assert done.stdout.strip() == expected
