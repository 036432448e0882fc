"""Grammar mode: Python regexes, Lark grammars and Outlines DSL terms as llama.cpp GBNF.

LM Studio takes ``{"type": "gbnf", "gbnfGrammar": ...}`` for llama.cpp-engine models.
The translators are hand-written because no Python library converts regexes or Lark
grammars to GBNF (llama.cpp's own converter only covers JSON schema). They are pure: no
I/O, deterministic output. See ``docs/grammar.md`` for what is supported and how it is
proven against llama.cpp's own grammar code.
"""

from __future__ import annotations

from ._api import lark_to_gbnf, regex_to_gbnf, term_to_gbnf

__all__ = ["lark_to_gbnf", "regex_to_gbnf", "term_to_gbnf"]
