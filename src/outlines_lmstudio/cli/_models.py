"""``outlines-lmstudio models``: the downloaded and loaded models and what they can do."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import lmstudio as lms

from ._common import CliError, connect, console, escape_controls, ready

__all__ = [
    "FORMATS",
    "HELP",
    "ModelRow",
    "add_arguments",
    "collect",
    "fit_columns",
    "lines",
    "run",
    "select",
]

HELP = "List the downloaded and loaded models with their capabilities."
DESCRIPTION = """\
List the LLMs and embedding models LM Studio has downloaded, which are loaded, and
the capabilities LM Studio reports for each (not guessed from the names):

  chat       an LLM (chat and completion)
  vision     the LLM accepts images
  tools      the LLM was trained for tool use
  embedding  an embedding model

On a terminal: a table. Piped or redirected: one model per line, tab-separated
(key, type, format, params, context, size, capabilities, loaded), never wrapped;
--json for a JSON list."""

CAPABILITIES = ("chat", "vision", "tools", "embedding")
SORT_KEYS = ("name", "size", "type", "capabilities")
DEFAULT_PAGE_SIZE = 20
ENGINES = {"gguf": "llama.cpp", "safetensors": "MLX", "mlx_placeholder": "MLX"}
FORMATS = {"gguf": "GGUF", "safetensors": "MLX", "mlx_placeholder": "MLX"}


@dataclass
class ModelRow:
    """One downloaded model (or a loaded one missing from the downloaded list)."""

    key: str
    display_name: str
    type: str
    format: str
    engine: str
    params: str | None
    architecture: str | None
    size_bytes: int
    max_context_length: int
    vision: bool
    tool_use: bool
    capabilities: list[str]
    loaded: bool = False
    loaded_as: list[str] = field(default_factory=list)
    """Identifiers of the loaded instances."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` options to ``parser``."""
    parser.add_argument(
        "--capability",
        action="append",
        choices=CAPABILITIES,
        default=[],
        help="only models with this capability (repeat to require several)",
    )
    parser.add_argument("--loaded", action="store_true", help="only loaded models")
    parser.add_argument(
        "--sort",
        choices=SORT_KEYS,
        default="name",
        help="sort by model key, size on disk, type (LLMs first) or capabilities "
        "(most first); default: %(default)s",
    )
    parser.add_argument("--reverse", action="store_true", help="reverse the order")
    parser.add_argument("--page", type=int, metavar="N", help="show page N (from 1)")
    parser.add_argument(
        "--page-size",
        type=int,
        metavar="N",
        help=f"models per page (default: all; {DEFAULT_PAGE_SIZE} when --page is given)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list, for scripts")


def _row(info: Any) -> ModelRow:
    model_type = str(info.type)
    vision = bool(getattr(info, "vision", False) or False)
    tool_use = bool(getattr(info, "trained_for_tool_use", False) or False)
    if model_type == "embedding":
        capabilities = ["embedding"]
    else:
        capabilities = ["chat"] + ["vision"] * vision + ["tools"] * tool_use
    fmt = str(info.format)
    return ModelRow(
        key=info.model_key,
        display_name=info.display_name,
        type=model_type,
        format=fmt,
        engine=ENGINES.get(fmt, fmt),
        params=getattr(info, "params_string", None),
        architecture=getattr(info, "architecture", None),
        size_bytes=int(info.size_bytes),
        max_context_length=int(info.max_context_length),
        vision=vision,
        tool_use=tool_use,
        capabilities=capabilities,
    )


def collect(client: Any) -> list[ModelRow]:
    """Ask LM Studio for the downloaded models and the loaded instances.

    Parameters
    ----------
    client
        An entered ``lmstudio.Client``.

    Returns
    -------
    list[ModelRow]
        One row per downloaded model, with its loaded instances. An instance unloaded
        between the list of loaded instances and the question about it (in LM Studio's
        UI, by its idle TTL) is left out, as a listing made a moment later would: its
        model is then not loaded, unless another instance of it is.
    """
    rows: dict[str, ModelRow] = {}
    for model in client.list_downloaded_models():
        row = _row(model.info)
        rows.setdefault(row.key, row)
    for handle in [*client.llm.list_loaded(), *client.embedding.list_loaded()]:
        try:
            info = handle.get_info()
        except lms.LMStudioModelNotFoundError:
            # Gone since it was listed (found by a probe: the whole listing failed). The
            # SDK keeps the info that `listLoaded` sent back from its handles, so each
            # instance is asked again; any other failure is still reported.
            continue
        row = rows.setdefault(info.model_key, _row(info))
        row.loaded = True
        row.loaded_as.append(handle.identifier)
    return list(rows.values())


def _sort_key(sort: str) -> Any:
    if sort == "size":
        return lambda r: (r.size_bytes, r.key.lower())
    if sort == "type":
        return lambda r: (r.type != "llm", r.type, r.key.lower())
    if sort == "capabilities":
        return lambda r: (-len(r.capabilities), ",".join(r.capabilities), r.key.lower())
    return lambda r: r.key.lower()


def select(rows: list[ModelRow], args: argparse.Namespace) -> tuple[list[ModelRow], str]:
    """Filter, sort and page the rows.

    Returns
    -------
    tuple[list[ModelRow], str]
        The rows to show, and a footer line ("" when there is no paging).

    Raises
    ------
    CliError
        If the page options are out of range.
    """
    wanted = set(args.capability)
    chosen = [r for r in rows if wanted <= set(r.capabilities) and (r.loaded or not args.loaded)]
    chosen.sort(key=_sort_key(args.sort), reverse=args.reverse)
    if args.page is None and args.page_size is None:
        return chosen, ""
    size, page = _paging(args)
    pages = max(1, math.ceil(len(chosen) / size))
    if not 1 <= page <= pages:
        raise CliError(
            f"--page {page} is out of range: {len(chosen)} models make {pages} page(s) of {size}."
        )
    shown = chosen[(page - 1) * size : page * size]
    footer = f"Page {page} of {pages} ({len(chosen)} models)"
    if page < pages:
        footer += f"; --page {page + 1} for more"
    return shown, footer


def _paging(args: argparse.Namespace) -> tuple[int, int]:
    """Return the page size and page asked for, refusing what no listing has."""
    size = DEFAULT_PAGE_SIZE if args.page_size is None else args.page_size
    page = 1 if args.page is None else args.page
    if size < 1:
        raise CliError(f"--page-size must be at least 1, got {size}.")
    if page < 1:
        raise CliError(f"--page must be at least 1, got {page}.")
    return size, page


_HEADERS = ("Model key", "Type", "Format", "Params", "Context", "Size", "Capabilities", "Loaded")
_DROP_ORDER = ("Params", "Type", "Format", "Context", "Size")
"""Columns left out, in this order, of a table wider than the terminal: the key, the
capabilities and whether a model is loaded are what the command is for."""
_GAP = 2  # between two columns


def fit_columns(widths: dict[str, int], available: int) -> list[str]:
    """Return the columns to show so that the table fits ``available`` cells (pure).

    Parameters
    ----------
    widths
        Each column's natural width (its longest cell or header), by header.
    available
        The terminal's width.

    Returns
    -------
    list[str]
        The headers to keep, in table order. Columns of `_DROP_ORDER` are left out
        one by one until the rest fits; the key, capabilities and loaded columns stay
        (then wrapped, or the terminal's own lines, if even they do not fit).
    """
    kept = list(widths)
    for name in _DROP_ORDER:
        if _span(widths, kept) <= available:
            break
        kept.remove(name)
    return kept


def _span(widths: dict[str, int], kept: list[str]) -> int:
    return sum(widths[k] for k in kept) + _GAP * (len(kept) - 1)


def _table(rows: list[ModelRow], title: str, width: int) -> tuple[Any, list[str]]:
    """Return the table for a terminal ``width`` cells wide, and the columns left out."""
    from rich import box
    from rich.cells import cell_len
    from rich.filesize import decimal
    from rich.table import Table

    cells = [_cells(row, decimal) for row in rows]
    widths = {
        header: max([cell_len(header), *(cell_len(line[i]) for line in cells)])
        for i, header in enumerate(_HEADERS)
    }
    kept = fit_columns(widths, width)
    hidden = [header for header in _HEADERS if header not in kept]
    if _span(widths, kept) > width:  # not even a table of three columns: a list
        return _narrow(rows, title), hidden
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    right = {"Params", "Context", "Size"}
    for header in kept:
        if header == "Model key":
            # A model key is what users copy: never wrapped or cut; the others give way.
            table.add_column(header, style="bold", no_wrap=True, min_width=widths[header])
        elif header == "Capabilities":
            table.add_column(header)
        elif header == "Loaded":
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right" if header in right else "left", no_wrap=True)
    index = [_HEADERS.index(header) for header in kept]
    for line in cells:
        table.add_row(*(line[i] for i in index))
    return table, hidden


def _narrow(rows: list[ModelRow], title: str) -> Any:
    """Each model's key on a line of its own (never cut), its capabilities and loaded below."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Text] = [Text(title, style="italic")]
    for row in rows:
        parts.append(Text(_shown(row.key), style="bold", no_wrap=True, overflow="ignore"))
        parts.append(Text(f"  {', '.join(row.capabilities)}; loaded: {_loaded(row)}"))
    return Group(*parts)


def _shown(text: str) -> str:
    r"""Return a server-given name with control characters escaped (``\x1b``, ``\t``).

    A key or identifier holding an escape sequence would act on the terminal (the table)
    and a tab or line break would break the piped form's one tab-separated line per model.
    ``--json`` keeps the names as they are (JSON escapes them).
    Only control characters: a zero-width joiner in an emoji or a no-break space is part
    of the name, and escaping it gave a key that ``cut -f1`` could not pass back (found by a
    probe).
    """
    return escape_controls(text, keep_lines=False)


def _cells(row: ModelRow, size: Any) -> list[str]:
    """Return the cells of a row, as shown in the table and in the piped form."""
    return [
        _shown(row.key),
        _shown(row.type),
        _shown(FORMATS.get(row.format, row.format)),
        _shown(row.params or ""),
        f"{row.max_context_length:,}",
        size(row.size_bytes),
        ", ".join(row.capabilities),
        _loaded(row),
    ]


def lines(rows: list[ModelRow]) -> list[str]:
    """One tab-separated line per model (for pipes): the table's columns, nothing wrapped.

    Columns: key, type, format, params, context, size, capabilities, loaded.
    """
    from rich.filesize import decimal

    return ["\t".join(_cells(row, decimal)) for row in rows]


def _loaded(row: ModelRow) -> str:
    if not row.loaded:
        return "no"
    if row.loaded_as == [row.key]:
        return "yes"
    return ", ".join(_shown(identifier) for identifier in row.loaded_as)


def run(args: argparse.Namespace) -> int:
    """List the models; return the exit status."""
    _paging(args)  # before connecting (found by a probe: "not reachable" for --page 0)
    with connect(args) as session:
        ready(session, "system", "llm", "embedding")
        rows = collect(session.client)
    shown, footer = select(rows, args)
    if args.json:
        print(json.dumps([asdict(r) for r in shown], indent=2))
        return 0
    out = console()
    filters = ", ".join(args.capability + (["loaded"] if args.loaded else []))
    title = f"Models on {session.host}" + (f" ({filters})" if filters else "")
    if not out.is_terminal:
        # A pipe or a file: one model per line, whatever the width; notes on stderr.
        for line in lines(shown):
            print(line)
        if not shown:
            print(f"{title}: no models match.", file=sys.stderr)
        if footer:
            print(footer, file=sys.stderr)
        return 0
    if not shown:
        out.print(f"{title}: no models match.")
        return 0
    table, hidden = _table(shown, title, out.width)
    out.print(table, crop=False)  # a key longer than the terminal is wrapped by it, not cut
    if hidden:
        out.print(
            f"Left out to fit the terminal: {', '.join(hidden)} (widen it, or use --json).",
            style="dim",
        )
    if footer:
        out.print(footer)
    return 0
