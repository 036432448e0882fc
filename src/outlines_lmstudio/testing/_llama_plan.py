"""What a prediction asks of llama.cpp, decided without I/O.

`plan` reads LM Studio's merged prediction config (and the instance's load
config, which holds the seed) into a `Plan`: sampler settings, token limit,
stop strings and the prompt template to use. `StopScanner` cuts streamed text
at stop strings the way llama.cpp's server does. `template_for` picks the
chat template: the GGUF's own, else a documented fallback.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from outlines_lmstudio.testing._wire import max_predicted_tokens, stop_strings

__all__ = [
    "CHATML_TEMPLATE",
    "GEMMA_TEMPLATE",
    "MAX_GRAMMAR_DEPTH",
    "Plan",
    "Sampling",
    "StopScanner",
    "flash_attention",
    "grammar_depth",
    "plan",
    "reversed_repetition",
    "template_for",
]

# The Gemma turn format (as in Google's Gemma 3 instruction-tuned chat template, text only).
# Used for Gemma GGUFs that carry no template, such as the embedded Gemma 3 270M base model:
# LM Studio lets a user supply a template in that case, and this is the one we supply.
GEMMA_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
{%- set loop_messages = messages[1:] -%}
{%- else -%}
{%- set first_user_prefix = '' -%}
{%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{%- endif -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}
{{- message['content'] | trim }}{{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"""

# ChatML, for other GGUFs without a template (the emulator's synthetic models use it too).
CHATML_TEMPLATE = """{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"""


@dataclass(frozen=True)
class Sampling:
    """Sampler settings of one prediction (LM Studio's defaults; its names in comments)."""

    temperature: float = 0.8  # temperature (0: greedy)
    top_k: int = 40  # topKSampling (0: off)
    top_p: float = 0.95  # topPSampling (1.0: off)
    min_p: float = 0.05  # minPSampling (0.0: off)
    repeat_penalty: float = 1.1  # repeatPenalty (1.0: off)
    repeat_last_n: int = 64
    seed: int = 0xFFFFFFFF  # the load config's seed; LLAMA_DEFAULT_SEED picks a random one


@dataclass(frozen=True)
class Plan:
    """What one prediction asks of the engine."""

    sampling: Sampling
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    template: str | None = None  # a jinja prompt template from the config (complete())
    bos_token: str | None = None
    eos_token: str | None = None
    cpu_threads: int | None = None


def _checked(value: Any, off: float) -> float | None:
    """Read a ``{checked, value}`` field: its value, ``off`` when unchecked, None when absent."""
    if isinstance(value, dict):
        inner = value.get("value")
        if not value.get("checked", True) or inner is False:  # the Python SDK's "off"
            return off
        return float(inner) if isinstance(inner, int | float) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _number(value: Any) -> float | None:
    """Return a finite number from the config as a float (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _seed(load_fields: list[dict[str, Any]]) -> int:
    for item in load_fields:
        if item.get("key") == "llm.load.seed":
            value = item.get("value")
            if (
                isinstance(value, dict)
                and value.get("checked")
                and isinstance(value.get("value"), int)
            ):
                return int(value["value"]) & 0xFFFFFFFF
            if isinstance(value, int) and not isinstance(value, bool):
                return value & 0xFFFFFFFF
    return Sampling.seed


def flash_attention(load_fields: list[dict[str, Any]]) -> bool | None:
    """Return the load's ``flashAttention`` (``llm.load.llama.flashAttention``), if it set one.

    Found by a probe: it was ignored, and llama.cpp's default ("auto": on where the backend
    has it) gave other greedy replies than a context without it.
    """
    for item in load_fields:
        if item.get("key") == "llm.load.llama.flashAttention":
            value = item.get("value")
            return value if isinstance(value, bool) else None
    return None


def plan(config: dict[str, Any], load_fields: list[dict[str, Any]]) -> Plan:
    """Read the merged prediction config (``llm.prediction.*`` keys) into a `Plan`."""
    base = Sampling()
    prefix = "llm.prediction."
    temperature = _number(config.get(prefix + "temperature"))
    # The SDK types topKSampling as a float: top_k=1 arrives as 1.0.
    top_k = _number(config.get(prefix + "topKSampling"))
    top_p = _checked(config.get(prefix + "topPSampling"), 1.0)
    min_p = _checked(config.get(prefix + "minPSampling"), 0.0)
    repeat = _checked(config.get(prefix + "repeatPenalty"), 1.0)
    sampling = Sampling(
        temperature=base.temperature if temperature is None else temperature,
        top_k=base.top_k if top_k is None else int(top_k),
        top_p=base.top_p if top_p is None else top_p,
        min_p=base.min_p if min_p is None else min_p,
        repeat_penalty=base.repeat_penalty if repeat is None else repeat,
        seed=_seed(load_fields),
    )
    max_tokens = max_predicted_tokens(config)
    stops = stop_strings(config)
    template = bos = eos = None
    setting = config.get(prefix + "promptTemplate")
    if isinstance(setting, dict) and setting.get("type") == "jinja":
        jinja = setting.get("jinjaPromptTemplate") or {}
        if isinstance(jinja.get("template"), str):
            template = str(jinja["template"])
            bos = str(jinja.get("bosToken", ""))
            eos = str(jinja.get("eosToken", ""))
    threads = config.get(prefix + "llama.cpuThreads")
    return Plan(
        sampling=sampling,
        max_tokens=max_tokens,
        stops=stops,
        template=template,
        bos_token=bos,
        eos_token=eos,
        cpu_threads=threads if isinstance(threads, int) and threads > 0 else None,
    )


def template_for(gguf_template: str | None, architecture: str) -> str:
    """Pick a GGUF model's chat template: its own, else its family's fallback."""
    if gguf_template:
        return gguf_template
    if architecture.startswith("gemma"):
        return GEMMA_TEMPLATE
    return CHATML_TEMPLATE


# llama.cpp parses GBNF groups by recursion: on an 8 MB thread stack a grammar nested about
# 20,000 groups deep overflows it and kills the process. The JSON-schema converter nests a
# group per item or character up to maxItems/maxLength, so {"maxLength": 100000} would.
# Well below the crash; llama.cpp refuses such repetition counts anyway ("exceeds sane
# defaults"), so nothing it would serve is refused.
MAX_GRAMMAR_DEPTH = 8000

_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\r\n]*|[()]')
_GBNF_REPEAT = re.compile(
    r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\r\n]*|\{\s*(\d+)\s*,\s*(\d+)\s*\}'
)


def grammar_depth(gbnf: str) -> int:
    """Return how deep a GBNF grammar nests parenthesised groups (literals and comments aside)."""
    depth = deepest = 0
    for match in _GBNF_TOKEN.finditer(gbnf):
        token = match.group()
        if token == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif token == ")":
            depth -= 1
    return deepest


class StopScanner:
    """Cut streamed text at the first stop string, holding back what may start one.

    Like llama.cpp's server, text that could be the beginning of a stop string
    is not sent until the next tokens show it is not.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.found: str | None = None

    def feed(self, text: str) -> str:
        """Add text; return what can be sent now (``found``: the stop string that ended it)."""
        if not self.stops:
            return text
        self.held += text
        hits = [(i, s) for i, s in ((self.held.find(s), s) for s in self.stops) if i >= 0]
        if hits:
            at, self.found = min(hits, key=lambda hit: hit[0])
            out, self.held = self.held[:at], ""
            return out
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.held)), 0, -1):
                if self.held.endswith(stop[:n]):
                    keep = max(keep, n)
                    break
        out = self.held[: len(self.held) - keep]
        self.held = self.held[len(self.held) - keep :]
        return out

    def flush(self) -> str:
        """Return the held-back text (generation ended without completing a stop string)."""
        out, self.held = self.held, ""
        return out


def reversed_repetition(gbnf: str) -> str | None:
    """Return the first repetition ``{m,n}`` with ``n < m`` (literals and comments aside).

    llama.cpp (0.3.36) does not refuse one: it allocates memory until the process is
    killed, so the engine refuses such a grammar before llama.cpp sees it.
    """
    for match in _GBNF_REPEAT.finditer(gbnf):
        low, high = match.group(1), match.group(2)
        if low is not None and high is not None and int(high) < int(low):
            return match.group()
    return None
