"""Control characters escaped before they reach a terminal (only ``re``: ``main`` uses it).

A model's reply, a server's message, or a name inside a schema can hold an escape
sequence that clears the screen or sets the window title when printed raw.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls"]

# C0 and C1 control characters, but a line break, a tab, and a carriage return that ends a
# line ("\r\n"): the characters that act on a terminal (ESC starts a sequence that clears
# the screen or sets the window title; a lone "\r" writes over the line).
_ACTS_ON_A_TERMINAL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str, *, keep_lines: bool = True) -> str:
    r"""Return ``text`` with its control characters escaped as Python writes them (``\x1b``).

    Parameters
    ----------
    text
        Text a model or the server wrote.
    keep_lines
        Keep line breaks and tabs (a reply's layout); ``False`` escapes them too (a name
        in a table, or in a piped tab-separated line). Other characters stay as they are:
        zero-width joiners, no-break spaces and the like are parts of names and words.
    """
    pattern = _ACTS_ON_A_TERMINAL if keep_lines else _CONTROL
    if pattern.search(text) is None:
        return text
    return pattern.sub(lambda found: ascii(found.group())[1:-1], text)
