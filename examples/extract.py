"""The main job: structured extraction with Outlines through LM Studio.

Runs against, in this order:

1. LM Studio, when one is reachable (``LMSTUDIO_HOST``, or LM Studio's default local ports);
2. the embedded real model (Gemma 3 270M on llama.cpp, served by the bundled emulator),
   when the ``local`` extra is installed;
3. the bundled emulator's synthetic engine (schema-valid but made-up values).

It prints which one it used and why, and names any default port it skipped because
another server is there. ``--local`` asks for the embedded model, ``--emulator`` for the
synthetic one. ``LMSTUDIO_MODEL`` picks the LM Studio model. Ctrl-C stops it with one line
and status 130, as the command line does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, NoReturn

INTERRUPTED = 130  # as the outlines-lmstudio command line


def _end_interrupted(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    """End on a Ctrl-C with one line and status 130, as the command line does.

    Set as ``sys.excepthook`` before anything loads, so a Ctrl-C while the libraries load
    or define their types (a second or two) ends the same way as one later. By then every
    ``with`` block has closed what it opened; ``os._exit`` leaves at once rather than wait
    for worker threads (the interpreter joins them at exit), as the command line does when
    they are stuck.
    """
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    print("extract.py: interrupted.", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(INTERRUPTED)


if __name__ == "__main__":
    sys.excepthook = _end_interrupted

import httpx  # noqa: E402 - after the hook
import lmstudio as lms  # noqa: E402
import outlines  # noqa: E402
import pydantic  # noqa: E402

from outlines_lmstudio import (  # noqa: E402
    LMStudioModelNotFoundError,
    OutlinesLMStudioError,
    ParseError,
    from_lmstudio,
)

# The library's own discovery: it probes the default ports past another server's, with a
# deadline on each probe (the SDK's stops at the first other server, and waits for good on
# one that streams). A private module: the demo shows the library's models, not this API.
from outlines_lmstudio._discovery import (  # noqa: E402
    NOT_LM_STUDIO,
    is_lm_studio,
    search_default_ports,
    unresolved,
    why_not_lm_studio,
)

# The install line for this copy (a checkout, a wheel): the package is on no index.
from outlines_lmstudio._install import install_command  # noqa: E402


class Person(pydantic.BaseModel):
    name: str
    age: int = pydantic.Field(ge=0)
    city: str


class LineItem(pydantic.BaseModel):
    description: str
    quantity: int = pydantic.Field(ge=1)
    unit_price: float = pydantic.Field(ge=0)


class Invoice(pydantic.BaseModel):
    vendor: str
    currency: Literal["EUR", "USD", "GBP"]
    items: list[LineItem]


class InvoiceTotal(pydantic.BaseModel):
    vendor: str
    total: float
    currency: Literal["EUR", "USD", "GBP"]


PEOPLE = [
    "John is 32 years old and lives in Paris.",
    "Mary Smith, aged 40, moved to Berlin last year.",
    "Our new colleague Ahmed Khan (27) works from the Leeds office.",
]
DOCUMENTS = [
    "Invoice from Acme Tools Ltd. 3 hammers at 12.50 EUR each and 1 ladder for 89.00 EUR.",
    "Bill: Blue Sky Printing, 500 business cards (0.08 USD apiece), 2 posters at 15 USD.",
    "Northwind Coffee invoice - 10 bags of beans, 7.25 GBP per bag.",
]
# For a small model, which gets most nested invoices wrong: the totals of three invoices
# (the first three of benchmarks/data/extraction_cases.json), whatever it makes of them.
TOTALS = [
    "Invoice from Acme Tools Ltd. Total due: 126.50 EUR.",
    "Blue Sky Printing - amount payable 70.00 USD.",
    "Northwind Coffee invoice. Total: 72.50 GBP.",
]


@dataclass
class Backend:
    host: str
    description: str
    model: str | None = None
    sampling: str = "the model's LM Studio defaults"
    kwargs: dict[str, Any] = field(default_factory=dict)
    small: bool = False  # too small a model for the nested invoices


# HOST:PORT as LM Studio's server is addressed: a name or address, then a port in digits.
HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\[\]]+):([0-9]+)")


def _refuse_host(value: str, why: str = "", example: str = "localhost:1234") -> NoReturn:
    print(
        f"LMSTUDIO_HOST={value!r} is not HOST:PORT{why}, e.g. {example}: fix it, or "
        "unset it to look for LM Studio on its default local ports.",
        file=sys.stderr,
    )
    raise SystemExit(2)


def _lmstudio() -> Backend | None:
    value = os.environ.get("LMSTUDIO_HOST", "")
    # Also written http://HOST:PORT/, as LM Studio shows its address (the CLI takes it too).
    if re.match(r"(?i:https|wss)://", value.strip()):  # the SDK would connect unencrypted
        _refuse_host(value, " (an encrypted https:// or wss:// connection: the SDK has none)")
    host = re.sub(r"^(?i:http|ws)://", "", value.strip()).rstrip("/")
    model = os.environ.get("LMSTUDIO_MODEL") or None
    if host:
        match = HOST_PORT.fullmatch(host)
        start = HOST_PORT.match(host)
        if match is None and start is not None and host[start.end() :].startswith(("/", "?")):
            # LM Studio's OpenAI-compatible address (HOST:PORT/v1) is what users paste.
            _refuse_host(value, f" alone: it has more ({host[start.end() :]!r})")
        if match is None and host.count(":") > 1 and not host.startswith("["):
            # As the CLI says it (found by a probe: "not HOST:PORT with a port from 1 to
            # 65535" for ::1:1234, whose port is fine).
            _refuse_host(value, ": an IPv6 address goes in brackets", "[::1]:1234")
        if match is None or not 0 < int(match[1]) <= 65535:
            _refuse_host(value, " with a port from 1 to 65535")
        try:
            answering = is_lm_studio(host)
            # False: nothing listens (found by a probe: that was said with no reason), or
            # the name does not resolve (a probe: "nothing answers there" for a typo).
            why = f": {unresolved(host) or 'nothing answers there (no server, or none reached)'}"
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError) as exc:
            _refuse_host(value, f" ({exc})")
        except NOT_LM_STUDIO as exc:  # another server: HTML, a stream, no answer...
            answering, why = False, f": {why_not_lm_studio(exc)}"
        if answering:
            return Backend(host, f"LM Studio at {host} (LMSTUDIO_HOST)", model)
        print(f"LMSTUDIO_HOST={value} is not answering as LM Studio{why}.", file=sys.stderr)
        return None
    found, skipped = search_default_ports()
    for where, error in skipped:
        print(f"Skipped {where}, not LM Studio: {why_not_lm_studio(error)}.", file=sys.stderr)
    if found:
        past = ", past the ports skipped above" if skipped else ""
        return Backend(found, f"LM Studio at {found} (found on a default local port{past})", model)
    return None


@contextlib.contextmanager
def backend(choice: str | None) -> Iterator[Backend]:
    """Yield the backend to run against (see the module docstring)."""
    from outlines_lmstudio.testing import (
        EMBEDDED_MODEL_KEY,
        LMStudioEmulator,
        embedded_available,
        embedded_model,
    )

    why = ""
    if choice is None:
        found = _lmstudio()
        if found is not None:
            yield found
            return
        why = "no LM Studio reachable"
    model = None
    if choice == "local" or (choice is None and embedded_available()):
        if choice == "local" and not embedded_available():
            raise SystemExit(
                f"The embedded model needs the local extra: {install_command('local')}"
            )
        try:
            model = embedded_model(lambda line: print(line, flush=True))
        except (ImportError, OSError, ValueError) as exc:  # its cache cannot hold it, or
            # llama.cpp's library does not load (found by probes: a traceback, no fallback)
            if choice == "local":
                raise SystemExit(f"The embedded model cannot be used: {exc}") from None
            print(f"The embedded model cannot be used: {exc}", file=sys.stderr, flush=True)
            why += f"; the embedded model cannot be used ({exc})"
    if model is not None:
        with LMStudioEmulator([model]) as emulator:
            print("Loading Gemma 3 270M into llama.cpp ...", flush=True)
            with lms.Client(emulator.api_host) as client:  # loads the weights now, not later
                client.llm.model(EMBEDDED_MODEL_KEY).count_tokens("Hello")
            yield Backend(
                emulator.api_host,
                "the embedded real model Gemma 3 270M (Q4_K_M) on llama.cpp, served by the "
                f"bundled emulator at {emulator.api_host} ({why or 'asked for with --local'})",
                EMBEDDED_MODEL_KEY,
                "greedy (temperature 0) with the repeat penalty off: this 270M model is reliable "
                "only when decoding greedily, and LM Studio's penalty (1.1 over the last 64 "
                "tokens, the prompt's included) keeps it from copying the prompt's numbers",
                {"temperature": 0, "repeat_penalty": 1.0},
                small=True,
            )
        return
    if choice is None and not embedded_available():
        why += f"; the local extra is not installed ({install_command('local')})"
    emulator = LMStudioEmulator()
    try:
        emulator.start()
    except ImportError as exc:  # a bare install: no `testing` extra (found by a probe)
        raise SystemExit(
            f"{why.removeprefix('; ') or 'asked for the emulator'}, and the bundled emulator "
            f"cannot start: {exc}"
        ) from None
    with emulator:
        yield Backend(
            emulator.api_host,
            f"the bundled LM Studio emulator's synthetic engine at {emulator.api_host} "
            f"({why or 'asked for with --emulator'}); its values are schema-valid but made "
            "up: it has no language model",
            sampling="the synthetic engine's seeded sampler",
        )


def extract(model: Any, texts: list[str], output_type: type[Any], task: str, **kw: Any) -> None:
    """Extract ``output_type`` from each text; a reply that does not validate is reported.

    Any other failure (LM Studio unreachable, an unknown model) is the same for every text:
    it ends the demo (`main` says it once).
    """
    for text in texts:
        print(f"\n{text}")
        try:
            value = model.parse(f"{task}: {text}", output_type, retries=1, **kw)
        except ParseError as exc:
            print(f"-> extraction failed: {exc}")
            continue
        print(f"-> {value.model_dump_json()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--local",
        action="store_const",
        const="local",
        dest="choice",
        help="run on the embedded Gemma 3 270M with llama.cpp (needs the local extra)",
    )
    group.add_argument(
        "--emulator",
        action="store_const",
        const="emulator",
        dest="choice",
        help="run on the synthetic emulator (schema-valid, made-up values)",
    )
    args = parser.parse_args(argv)
    # Not `with lms.Client(...)`: entering it probes the host again with the SDK's own probe,
    # which has no deadline. The library connects on first use, within its connect_timeout.
    with backend(args.choice) as chosen, contextlib.closing(lms.Client(chosen.host)) as client:
        print(f"Running against {chosen.description}")
        print(f"Sampling: {chosen.sampling}")
        model = from_lmstudio(client, chosen.model)
        kw = {"max_tokens": 256, **chosen.kwargs}
        try:
            run(model, chosen, kw)
        except OutlinesLMStudioError as exc:
            if chosen.model is None and isinstance(exc, LMStudioModelNotFoundError):
                print(
                    "LM Studio has no LLM loaded: load one in LM Studio, or name one with "
                    "LMSTUDIO_MODEL=KEY (LM Studio then loads it).",
                    file=sys.stderr,
                )
            else:
                print(f"\nStopped: {exc}", file=sys.stderr)
            return 1
    return 0


def run(model: Any, chosen: Backend, kw: dict[str, Any]) -> None:
    """Run the examples; raise the first failure that is not a reply's own."""
    extract(model, PEOPLE, Person, "Extract the person as JSON", **kw)
    if chosen.small:
        print(
            "\nInvoice totals (Gemma 3 270M gets most nested invoices, with their line items, "
            "wrong; it gets about three invoice fields in four right: docs/benchmarks.md. "
            "Run with LM Studio for the nested ones):"
        )
        extract(
            model,
            TOTALS,
            InvoiceTotal,
            "Extract the invoice as JSON with the fields vendor, total, currency",
            **kw,
        )
    else:
        extract(model, DOCUMENTS, Invoice, "Extract the invoice as JSON", **kw)
    # The same through Outlines' own Generator (returns JSON text):
    prompt = f"Extract the person as JSON: {PEOPLE[0]}"
    text = str(outlines.Generator(model, Person)(prompt, **kw))
    Person.model_validate_json(text)
    print(f"\noutlines.Generator(model, Person) returned valid JSON: {json.loads(text)}")


if __name__ == "__main__":
    # The SDK's own log lines ("Connection failed ...") stay out of the terminal: the demo
    # says what failed in one line, as the command line does.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        status = main()
    except BrokenPipeError:
        # The reader went away (`bash scripts/demo | head`): stop quietly, with the status a
        # shell gives a command killed by SIGPIPE, as the CLI does. Nothing more reaches the
        # closed pipe (Python flushes standard output at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141
    raise SystemExit(status)
