"""The measured table for the main job: labelled extractions on the embedded real model.

``python -m benchmarks.extraction [--write-docs] [--limit N]``

Runs every case of ``benchmarks/data/extraction_cases.json`` through the library
(``from_lmstudio`` on the bundled emulator serving Gemma 3 270M with llama.cpp),
greedy with the repeat penalty off, three ways with the same prompt:

- ``constrained``: ``model.parse(prompt, T)``, the JSON schema constraining decoding;
- ``unconstrained``: ``model(prompt)`` without an output type, then parsed by us
  (the first ``{...}`` of the reply, code fences allowed) and validated;
- ``constrained + retries=1``: ``model.parse(prompt, T, retries=1)``.

Scores JSON validity, schema validity and field-level accuracy against the
ground truth. Writes ``benchmarks/results/extraction.json`` (every reply) and,
with ``--write-docs``, the marked section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lmstudio as lms
import pydantic

from benchmarks._sections import publish
from outlines_lmstudio import ParseError, from_lmstudio

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "benchmarks" / "data" / "extraction_cases.json"
RESULTS = ROOT / "benchmarks" / "results" / "extraction.json"
MAX_TOKENS = 128
# Greedy, with the repeat penalty off: as the demo and `--local` run this model (LM Studio's
# penalty counts the prompt's tokens, and keeps a 270M model from copying its values).
SAMPLING: dict[str, Any] = {"temperature": 0, "repeat_penalty": 1.0}
WAYS = ("constrained", "unconstrained", "constrained + retries=1")


class Person(pydantic.BaseModel):
    name: str
    age: int
    city: str


class Invoice(pydantic.BaseModel):
    vendor: str
    total: float
    currency: Literal["EUR", "USD", "GBP", "JPY", "CHF"]


class Address(pydantic.BaseModel):
    street: str
    city: str
    postcode: str
    country: str


class Appointment(pydantic.BaseModel):
    person: str
    date: datetime.date


KINDS: dict[str, type[pydantic.BaseModel]] = {
    "person": Person,
    "invoice": Invoice,
    "address": Address,
    "appointment": Appointment,
}


def prompt_for(case: dict[str, Any]) -> str:
    fields = ", ".join(KINDS[case["kind"]].model_fields)
    return f"Extract the {case['kind']} as JSON with the fields {fields}: {case['text']}"


def lenient_json(text: str) -> Any:
    """Parse a reply as JSON: as is, else its first ``{`` to its last ``}``; None if neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            return None
    return None


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return abs(float(value) - float(expected)) < 0.005
        except (TypeError, ValueError):
            return False
    if value is None:
        return False
    return " ".join(str(value).split()).casefold().rstrip(".") == str(expected).casefold()


def score(
    case: dict[str, Any], raw: str, validated: pydantic.BaseModel | None, elapsed: float
) -> dict[str, Any]:
    """Score one reply: JSON valid, schema valid, and which fields are right."""
    data = lenient_json(raw)
    if validated is None and isinstance(data, dict):
        with contextlib.suppress(pydantic.ValidationError):
            validated = KINDS[case["kind"]].model_validate(data)
    values: dict[str, Any] = {}
    if validated is not None:
        values = validated.model_dump(mode="json")
    elif isinstance(data, dict):
        values = data
    fields = {k: _same(values.get(k), v) for k, v in case["expected"].items()}
    return {
        "id": case["id"],
        "raw": raw,
        "json_valid": data is not None,
        "schema_valid": validated is not None,
        "fields": fields,
        "seconds": round(elapsed, 3),
    }


def run_case(model: Any, case: dict[str, Any], way: str) -> dict[str, Any]:
    output_type = KINDS[case["kind"]]
    prompt = prompt_for(case)
    start = time.perf_counter()
    if way == "unconstrained":
        raw = str(model(prompt, max_tokens=MAX_TOKENS, **SAMPLING))
        return score(case, raw, None, time.perf_counter() - start)
    retries = 1 if way.endswith("retries=1") else 0
    try:
        value = model.parse(prompt, output_type, retries=retries, max_tokens=MAX_TOKENS, **SAMPLING)
    except ParseError as exc:
        return score(case, exc.raw, None, time.perf_counter() - start)
    return score(case, value.model_dump_json(), value, time.perf_counter() - start)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    fields = [ok for r in results for ok in r["fields"].values()]
    n = len(results)
    return {
        "cases": n,
        "json_valid": sum(r["json_valid"] for r in results) / n,
        "schema_valid": sum(r["schema_valid"] for r in results) / n,
        "field_accuracy": sum(fields) / len(fields),
        "all_fields_right": sum(all(r["fields"].values()) for r in results) / n,
        "seconds": round(sum(r["seconds"] for r in results), 1),
    }


def measure(cases: list[dict[str, Any]], progress: Callable[[str], None]) -> dict[str, Any]:
    from outlines_lmstudio.testing import EMBEDDED_MODEL_KEY, LMStudioEmulator, embedded_model

    runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    with (
        LMStudioEmulator([embedded_model(progress)]) as emulator,
        lms.Client(emulator.api_host) as client,
    ):
        model = from_lmstudio(client, EMBEDDED_MODEL_KEY)
        for i, case in enumerate(cases, 1):
            for way in WAYS:
                runs[way].append(run_case(model, case, way))
            progress(f"{i}/{len(cases)} {case['id']}")
    by_kind = {
        way: {
            kind: summarise([r for r, c in zip(rs, cases, strict=True) if c["kind"] == kind])
            for kind in KINDS
            if any(c["kind"] == kind for c in cases)
        }
        for way, rs in runs.items()
    }
    distractors = {
        way: summarise([r for r, c in zip(rs, cases, strict=True) if c.get("distractor")])
        for way, rs in runs.items()
        if any(c.get("distractor") for c in cases)
    }
    return {
        "model": (
            "Gemma 3 270M Q4_K_M (embedded) on llama-cpp-python 0.3.36, greedy, repeat penalty off"
        ),
        "max_tokens": MAX_TOKENS,
        "summary": {way: summarise(rs) for way, rs in runs.items()},
        "by_kind": by_kind,
        "with_distractors": distractors,
        "runs": runs,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def table(result: dict[str, Any]) -> str:
    lines = [
        "| Way | JSON valid | Schema valid | Field accuracy | All fields right | Time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for way, s in result["summary"].items():
        lines.append(
            f"| {way} | {_pct(s['json_valid'])} | {_pct(s['schema_valid'])} | "
            f"{_pct(s['field_accuracy'])} | {_pct(s['all_fields_right'])} | {s['seconds']} s |"
        )
    kinds = list(next(iter(result["by_kind"].values())))
    lines += ["", "Field accuracy by kind of record:", ""]
    lines.append("| Way | " + " | ".join(kinds) + " | with distractors |")
    lines.append("|---|" + "---:|" * (len(kinds) + 1))
    for way, per_kind in result["by_kind"].items():
        cells = [_pct(per_kind[k]["field_accuracy"]) for k in kinds]
        distract = result["with_distractors"].get(way)
        cells.append(_pct(distract["field_accuracy"]) if distract else "-")
        lines.append(f"| {way} | " + " | ".join(cells) + " |")
    n = next(iter(result["summary"].values()))["cases"]
    lines += [
        "",
        f"{n} cases, {result['model']}, at most {result['max_tokens']} tokens. Produced by "
        "`python -m benchmarks.extraction --write-docs`; every reply is in "
        "`benchmarks/results/extraction.json`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--limit", type=int, default=None, help="run only the first N cases")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    cases = json.loads(CASES.read_text(encoding="utf-8"))["cases"][: args.limit]
    result = measure(cases, lambda line: print(line, file=sys.stderr, flush=True))
    section = ("extraction", "## Real engine: extraction accuracy")
    publish(result, RESULTS, table(result), section if args.write_docs else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
