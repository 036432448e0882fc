"""Output types from the command line: ``--schema``, ``--type``, ``--choice``, ``--regex``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._formats import check_schema
from .._json_keys import RepeatedKey, without_repeats
from ._common import CliError, escape_lone_surrogates, file_path
from ._text import SCHEMA_LIMIT, as_utf8, check_text, decode_file, read_file

__all__ = [
    "InlineSchema",
    "OutputSpec",
    "add_output_options",
    "check_output_type",
    "json_text",
    "load_schema",
    "load_type",
    "output_spec",
    "schema_source",
    "to_json",
    "type_code_error",
]


@dataclass(frozen=True)
class OutputSpec:
    """What to ask the model for and how to print it.

    Attributes
    ----------
    output_type
        The Outlines output type (``None`` for free text).
    grammar
        Whether the model needs grammar mode (``--regex``).
    structured
        Whether the result is a JSON value to pretty-print.
    """

    output_type: Any = None
    grammar: bool = False
    structured: bool = False


def add_output_options(parser: argparse.ArgumentParser, *, text: bool) -> None:
    """Add the mutually exclusive output-type options.

    Parameters
    ----------
    parser
        The subcommand's parser.
    text
        Also offer ``--choice`` and ``--regex`` (plain-text results).
    """
    group = parser.add_mutually_exclusive_group(required=not text)
    group.add_argument(
        "--schema",
        type=schema_source,
        metavar="FILE|JSON",
        help="the JSON schema the result must follow: a file, or the schema itself ('{...}')",
    )
    group.add_argument(
        "--type",
        dest="type_path",
        metavar="MODULE:CLASS",
        help="a Pydantic model (imported from MODULE, the current directory included)",
    )
    if text:
        group.add_argument(
            "--choice",
            metavar="A,B,C",
            help="answer with exactly one of these comma-separated choices",
        )
        group.add_argument(
            "--regex",
            metavar="REGEX",
            help="answer matching this regular expression (grammar mode: GGUF models only)",
        )


@dataclass(frozen=True)
class InlineSchema:
    """A ``--schema`` given as the schema's JSON text itself, not as a file's path.

    Attributes
    ----------
    text
        The argument, as Python decoded it.
    """

    text: str


def schema_source(text: str) -> Path | InlineSchema:
    """Return ``--schema``'s value: the schema's own JSON text, or a file's path.

    Text that starts with ``{`` (after white space) is the schema itself, as users write it
    (found by a probe: ``--schema '{"type": "object", ...}'`` was refused as "Cannot read
    schema file ...: no such file"), unless a file of that name exists: it is read then,
    as before. No JSON schema a command can use is anything but an object.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is empty (a usage error, status 2, before connecting).
    """
    if text.lstrip().startswith("{") and not os.path.lexists(text):
        return InlineSchema(text)
    return file_path(text)


def load_schema(source: Path | InlineSchema) -> dict[str, Any]:
    """Read and check a JSON schema: a file's, or one given on the command line.

    Raises
    ------
    CliError
        If the file is unreadable, or the schema is not JSON, not an object, or not a
        valid JSON schema.
    """
    import jsonschema

    from outlines_lmstudio._schema_checks import meta_schema_error

    if isinstance(source, InlineSchema):
        name, fix = "The --schema JSON", "Fix it."
        # As the command's other text: its bytes read as UTF-8 whatever the locale.
        text = check_text(as_utf8(source.text), name)
    else:
        name, fix = f"Schema file {str(source)!r}", "Fix the file."
        text = decode_file(_schema_file(source), name)
    try:
        schema = json.loads(text, object_pairs_hook=without_repeats, parse_constant=_no_constant)
    except RepeatedKey as exc:  # found by a probe: the first value was dropped, silently
        raise CliError(
            f"{name} has the key {exc.args[0]!r} twice in one object (JSON "
            f"readers keep only one of them). {fix}"
        ) from None
    except _NotPlainJson as exc:
        raise CliError(f"{name} {exc}. {fix}") from None
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). {fix}"
        ) from None
    except RecursionError:
        raise _too_deep(name) from None
    except ValueError:  # only Python's limit on integer digits is left (found by a probe)
        raise CliError(
            f"{name} has an integer of more than {sys.get_int_max_str_digits()} digits, "
            f"which Python cannot read. {fix}"
        ) from None
    if not isinstance(schema, dict):
        raise CliError(
            f"{name} holds a JSON {type(schema).__name__}, not a JSON "
            'schema object such as {"type": "object", "properties": {...}}.'
        )
    if "$schema" in schema and not isinstance(schema["$schema"], str):  # found by a review:
        raise CliError(  # "unexpected TypeError: unhashable type: 'list'"
            f"{name} is not a valid JSON schema: at /$schema: it must be a "
            "string, the URI of a JSON Schema draft."
        )
    try:
        check_schema(jsonschema.validators.validator_for(schema), schema)
    except jsonschema.SchemaError as exc:
        where, message = meta_schema_error(exc)  # as the library says it (found by a probe)
        raise CliError(f"{name} is not a valid JSON schema: at {where}: {message}.") from None
    except RecursionError:  # jsonschema recurses once per level, Python's stack does not
        raise _too_deep(name) from None
    return schema


def _schema_file(path: Path) -> bytes:
    """Return a schema file's bytes (bounded: see `read_file`)."""
    try:
        return read_file(
            path,
            SCHEMA_LIMIT,
            f"Schema file {str(path)!r}",
            "no JSON schema is that large: check the path.",
        )
    except FileNotFoundError:
        raise CliError(f"Cannot read schema file {str(path)!r}: no such file.") from None
    except IsADirectoryError:
        raise CliError(f"Cannot read schema file {str(path)!r}: it is a directory.") from None
    except OSError as exc:
        raise CliError(f"Cannot read schema file {str(path)!r}: {exc.strerror or exc}.") from None


class _NotPlainJson(ValueError):
    """What Python's ``json`` reads and a JSON schema must not hold."""


def _no_constant(name: str) -> Any:
    raise _NotPlainJson(f"holds {name}, which is not JSON (JSON has no NaN or infinity)")


def check_output_type(spec: OutputSpec, *, regex_option: bool) -> None:
    """Refuse an output type no request could use, before anything is sent.

    The checks ``parse`` makes when called (the schema's dialect, what it can check); found
    by a probe: ``generate`` made them after connecting and loading the model, so a bad
    schema was reported as "not reachable" with LM Studio down, or after a model load.

    Parameters
    ----------
    spec
        The output type.
    regex_option
        Whether the command has ``--regex`` (its hints name it).

    Raises
    ------
    CliError
        With the library's message in the command's terms (status 2).
    """
    if spec.output_type is None:
        return
    from outlines_lmstudio._dialects import WAYS_OUT
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio._typed import validator_for
    from outlines_lmstudio.errors import InvalidSchemaError, UnsupportedOutputTypeError

    from ._common import error_message

    try:
        validator_for(plan_output(spec.output_type, grammar=spec.grammar))
    except (InvalidSchemaError, UnsupportedOutputTypeError) as exc:
        text = str(exc)
        if not regex_option:
            text = text.replace(WAYS_OUT, "Way out: restructure the schema without it.")
        raise CliError(error_message(exc) if regex_option else text) from None


def _not_a_file_path(spec: str, module_name: str, attr_path: str) -> CliError:
    """Return the error for a ``--type`` whose MODULE is a file's path (``app/models.py``)."""
    stem = Path(module_name.removesuffix(".py"))
    folder = str(stem.parent)
    where = "" if folder == "." else f" from {folder!r} (or add it to PYTHONPATH)"
    return CliError(
        f"--type {spec!r}: MODULE is a Python module name, not a file path: run "
        f"--type {stem.name}:{attr_path}{where}."
    )


def _too_deep(name: str) -> CliError:
    """Return the error for a schema nested deeper than Python's stack can read or check."""
    from outlines_lmstudio._schema_walk import MAX_SCHEMA_DEPTH

    return CliError(
        f"{name} is nested too deeply to read (a schema may have up to "
        f"{MAX_SCHEMA_DEPTH} levels): flatten it, or use $defs and $ref for recursive "
        "structures."
    )


def _check_not_shadowed(spec: str, top: str) -> None:
    """Refuse a module of the current directory named like one already loaded from elsewhere.

    ``types.py`` here cannot be imported as ``types`` once the standard library's is loaded:
    the loaded one was used, and its missing class was the only error.
    """
    loaded = sys.modules.get(top)
    here = Path(f"{top}.py").is_file() or Path(top, "__init__.py").is_file()
    if loaded is None or not here:
        return
    origin = getattr(loaded, "__file__", None)
    if origin is not None and Path(origin).resolve().parent in (Path.cwd(), Path.cwd() / top):
        return  # it is this directory's own module
    raise CliError(
        f"--type {spec!r}: {top!r} in the current directory is named like the module "
        f"{top!r} that is already loaded ({origin or 'built in'}), so it cannot be imported: "
        f"rename it (for example my_{top}.py) and run --type my_{top}:..."
    )


def load_type(spec: str) -> Any:
    """Import ``module:Class`` (the current directory is searched first).

    Raises
    ------
    CliError
        If it cannot be imported or is not a Pydantic model class.
    """
    import pydantic

    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise CliError(f"--type {spec!r} must be MODULE:CLASS, e.g. myapp.models:Person.")
    _check_not_shadowed(spec, module_name.partition(".")[0])
    # Like `python -m`: modules in the current directory first, but only while this one is
    # imported: left there, a file of the current directory named like a module imported
    # later (sqlite3.py, pprint.py) would be run in its place.
    path_like = module_name.endswith(".py") or "/" in module_name
    if not module_name.strip("./"):  # ".", "./": no module at all (a review)
        raise CliError(f"--type {spec!r} must be MODULE:CLASS, e.g. myapp.models:Person.")
    if module_name.startswith("."):
        # Found by a probe: "./models.py" (tab completion) or ".models" gave importlib's
        # "TypeError: the 'package' argument is required to perform a relative import".
        if path_like:
            raise _not_a_file_path(spec, module_name, attr_path)
        raise CliError(
            f"--type {spec!r}: MODULE is a module's full name, not a relative one: run "
            f"--type {module_name.lstrip('.')}:{attr_path} from the folder that holds it."
        )
    added = "" not in sys.path
    if added:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if path_like:  # a file given for the module
            raise _not_a_file_path(spec, module_name, attr_path) from None
        raise CliError(
            f"--type {spec!r}: cannot import {module_name!r} ({exc}). Run from the directory "
            "that holds it, or add that directory to PYTHONPATH."
        ) from None
    except Exception as exc:
        raise CliError(
            f"--type {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    except SystemExit as exc:  # sys.exit() at import: the command ended with no word
        raise CliError(
            f"--type {spec!r}: importing {module_name!r} called sys.exit({exc.code!r}); a "
            "module used as --type must not exit when it is imported (guard that code with "
            '`if __name__ == "__main__":`).'
        ) from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove("")
    # The module part names a file, opened as Python decoded it; a class name is source
    # text, which Python reads as UTF-8 (found by a probe: `--type m:Pérsonne` in the C
    # locale was "'m' has no 'P\udcc3\udca9rsonne'").
    for name in as_utf8(attr_path).split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise CliError(f"--type {spec!r}: {module_name!r} has no {attr_path!r}.") from None
    if not (isinstance(obj, type) and issubclass(obj, pydantic.BaseModel)):
        what = (
            f"the class {obj.__name__}"
            if isinstance(obj, type)
            else f"an object of type {type(obj).__name__}"
        )
        from outlines_lmstudio._foreign import foreign_class

        found = foreign_class(obj)  # a v1 model, an attrs class...: what to write instead
        if found is not None:
            what, instead = found
            if "pydantic.v1" not in what:  # the library's ways out (a dataclass, a schema
                # as a dict) are not --type's (found by a review)
                instead = "--type takes a Pydantic model: write one, or give the JSON schema "
                instead += "with --schema (a file, or the schema written out)."
            raise CliError(f"--type {spec!r} is {what}: {instead}")
        raise CliError(f"--type {spec!r} is {what}, not a Pydantic model class.")
    from outlines_lmstudio._output import plan_output
    from outlines_lmstudio.errors import OutlinesLMStudioError

    try:  # fails here, as the library says it (naming the field), before any connection
        plan_output(obj)
    except OutlinesLMStudioError as exc:
        raise CliError(f"--type {spec!r}: {exc}") from None
    except Exception as exc:  # the model's own schema hooks may raise anything
        raise CliError(
            f"--type {spec!r}: cannot build a JSON schema for {obj.__name__}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    return obj


def type_code_error(exc: BaseException, output_type: Any) -> str | None:
    """Say that ``exc`` came from the ``--type`` class's own code, or return ``None``.

    A validator or serializer of the user's model that raises something other than
    Pydantic's validation errors (``1/0`` in a ``field_validator``) reaches the command as
    that exception: it is the user's code failing, not a bug of ours. It is told by a frame
    of the traceback that runs in the model's own top-level package.

    Returns
    -------
    str | None
        The one-line message, if it came from there.
    """
    module = getattr(output_type, "__module__", None)
    if not isinstance(output_type, type) or not isinstance(module, str):
        return None
    package = module.partition(".")[0]
    trace = exc.__traceback__
    while trace is not None:
        name = trace.tb_frame.f_globals.get("__name__", "")
        if name == package or name.startswith(package + "."):
            return (
                f"the --type {output_type.__name__}'s own code raised "
                f"{type(exc).__name__}: {exc} (in {name}, line {trace.tb_lineno})"
            )
        trace = trace.tb_next
    return None


def output_spec(args: argparse.Namespace) -> OutputSpec:
    """Build the output type from the parsed options (before connecting).

    Raises
    ------
    CliError
        If an option's value is invalid.
    """
    if args.schema is not None:
        return OutputSpec(load_schema(args.schema), structured=True)
    if args.type_path is not None:
        return OutputSpec(load_type(args.type_path), structured=True)
    choice = getattr(args, "choice", None)
    if choice is not None:
        from outlines.types import Choice

        choices = [c.strip() for c in choice.split(",")]
        if not all(choices) or len(set(choices)) != len(choices):
            raise CliError(
                f"--choice {choice!r} needs distinct, non-empty comma-separated choices, "
                "e.g. --choice positive,negative,neutral."
            )
        return OutputSpec(Choice(choices))
    regex = getattr(args, "regex", None)
    if regex is not None:
        from outlines.types import Regex

        if not regex:  # matches only the empty answer: surely not what was meant
            raise CliError("--regex is empty: give the pattern the answer must match.")
        try:
            with warnings.catch_warnings():
                # Python warns of a set its next versions will read otherwise, such as a
                # POSIX class ([[:alpha:]], read as the set "[:alph" then "]"): found by a
                # probe, three warnings with our file paths, then a reply like "p]]]".
                warnings.simplefilter("error", FutureWarning)
                re.compile(regex)
        except FutureWarning as exc:
            raise CliError(
                f"--regex {regex!r} is ambiguous: {exc}. Escape the '[' or the repeated "
                "character (\\[, \\-), or, for a POSIX class such as [[:alpha:]], write "
                "its range ([a-zA-Z])."
            ) from None
        except (re.error, OverflowError) as exc:  # OverflowError: a{99999999999999999999}
            raise CliError(f"--regex {regex!r} is not a valid regular expression: {exc}.") from None
        except RecursionError:
            raise CliError(
                f"--regex {regex[:60]!r}... nests its groups too deeply for Python's regular "
                "expressions (its recursion limit): flatten them."
            ) from None
        return OutputSpec(Regex(regex), grammar=True)
    return OutputSpec()


def to_json(value: Any) -> Any:
    """Turn a parsed value (dict, Pydantic model...) into plain JSON data."""
    import pydantic_core

    return pydantic_core.to_jsonable_python(value)


def json_text(value: Any, indent: int | None = None) -> str:
    r"""Return ``value`` as JSON text that UTF-8 can encode.

    Non-ASCII characters are written as they are, except lone surrogates (a reply's
    ``"\ud83d"``, half of a pair): UTF-8 cannot hold them, so they are written as the
    ``\uXXXX`` escapes the model wrote, and the text reads back to the same value.
    """
    return escape_lone_surrogates(json.dumps(value, indent=indent, ensure_ascii=False))
