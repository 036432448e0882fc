"""The main job: structured extraction with Outlines through LM Studio.

Runs against LM Studio when one is reachable (``LMSTUDIO_HOST``, or LM Studio's
default local ports), otherwise against the bundled emulator, and says which.
Optional: ``LMSTUDIO_MODEL`` picks the model (default: the one LM Studio has loaded).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Literal

import lmstudio as lms
import outlines
import pydantic

from outlines_lmstudio import OutlinesLMStudioError, from_lmstudio


class LineItem(pydantic.BaseModel):
    description: str
    quantity: int = pydantic.Field(ge=1)
    unit_price: float = pydantic.Field(ge=0)


class Invoice(pydantic.BaseModel):
    vendor: str
    currency: Literal["EUR", "USD", "GBP"]
    items: list[LineItem]


DOCUMENTS = [
    "Invoice from Acme Tools Ltd. 3 hammers at 12.50 EUR each and 1 ladder for 89.00 EUR.",
    "Bill: Blue Sky Printing, 500 business cards (0.08 USD apiece), 2 posters at 15 USD.",
    "Northwind Coffee invoice - 10 bags of beans, 7.25 GBP per bag.",
]


@contextlib.contextmanager
def lmstudio_host() -> Iterator[tuple[str, str]]:
    """Yield (host, description): a real LM Studio if reachable, else the emulator."""
    host = os.environ.get("LMSTUDIO_HOST")
    if host and lms.Client.is_valid_api_host(host):
        yield host, f"LM Studio at {host}"
        return
    if host:
        print(f"LMSTUDIO_HOST={host} is not answering as LM Studio.", file=sys.stderr)
    else:
        found = lms.Client.find_default_local_api_host()
        if found:
            yield found, f"LM Studio at {found}"
            return
    from outlines_lmstudio.testing import LMStudioEmulator

    with LMStudioEmulator() as emulator:
        yield (
            emulator.api_host,
            f"the bundled LM Studio emulator at {emulator.api_host} (no LM Studio reachable; "
            "its values are schema-valid but made up: it has no language model)",
        )


def main() -> int:
    with lmstudio_host() as (host, description):
        print(f"Running against {description}")
        model_name = os.environ.get("LMSTUDIO_MODEL") or None
        with lms.Client(host) as client:
            model = from_lmstudio(client, model_name)
            try:
                # Typed values, validated, concurrently, in order:
                invoices = model.parse(DOCUMENTS, Invoice, retries=1, max_tokens=512)
                # The same through Outlines' own Generator (returns JSON text):
                generator = outlines.Generator(model, Invoice)
                text = str(generator(DOCUMENTS[0], max_tokens=512))
            except OutlinesLMStudioError as exc:
                print(f"Extraction failed: {exc}", file=sys.stderr)
                return 1
        for document, invoice in zip(DOCUMENTS, invoices, strict=True):
            total = sum(i.quantity * i.unit_price for i in invoice.items)
            print(f"\n{document}\n-> {invoice.model_dump_json()}")
            print(f"   total {total:.2f} {invoice.currency}")
        Invoice.model_validate_json(text)
        vendor = json.loads(text)["vendor"]
        print(f"\noutlines.Generator(model, Invoice) returned valid JSON (vendor {vendor!r})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
