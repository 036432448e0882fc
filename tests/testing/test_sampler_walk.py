"""The sampler's walk stops in a final state when pushed toward acceptance (a regression)."""

from __future__ import annotations

import json
import random

import jsonschema

from outlines_lmstudio.testing._sampler import JsonSampler

SCHEMA = {"anyOf": [{"type": "integer"}, {"type": "null"}]}


def test_a_final_state_under_pressure_ends_the_walk() -> None:
    # Seed 405 used to reach a final state with more to say and nothing closer to
    # acceptance: random.choice([]) raised IndexError (found by test_sampler's hypothesis run).
    sampler = JsonSampler()
    for seed in range(2000):
        text = "".join(sampler.sample(SCHEMA, random.Random(seed)))
        jsonschema.validate(json.loads(text), SCHEMA)
