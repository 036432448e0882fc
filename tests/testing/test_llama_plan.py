"""The llama.cpp engine's I/O-free decisions: config reading, stop strings, templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outlines_lmstudio.testing._llama_plan import (
    CHATML_TEMPLATE,
    GEMMA_TEMPLATE,
    Sampling,
    StopScanner,
    grammar_depth,
    plan,
    reversed_repetition,
    template_for,
)

P = "llm.prediction."


def test_plan_defaults_are_lm_studios() -> None:
    how = plan({}, [])
    assert how.sampling == Sampling()
    assert (how.sampling.temperature, how.sampling.top_k) == (0.8, 40)
    assert (how.sampling.top_p, how.sampling.min_p, how.sampling.repeat_penalty) == (
        0.95,
        0.05,
        1.1,
    )
    assert how.max_tokens is None
    assert how.stops == ()
    assert how.template is None


def test_plan_reads_every_sampler_setting() -> None:
    config = {
        P + "temperature": 0,
        P + "topKSampling": 5,
        P + "topPSampling": {"checked": True, "value": 0.5},
        P + "minPSampling": {"checked": True, "value": 0.2},
        P + "repeatPenalty": {"checked": True, "value": 1.3},
        P + "maxPredictedTokens": {"checked": True, "value": 7},
        P + "stopStrings": ["\n", ""],
        P + "llama.cpuThreads": 3,
    }
    load = [{"key": "llm.load.seed", "value": {"checked": True, "value": 42}}]
    how = plan(config, load)
    assert how.sampling == Sampling(
        temperature=0.0, top_k=5, top_p=0.5, min_p=0.2, repeat_penalty=1.3, seed=42
    )
    assert how.max_tokens == 7
    assert how.stops == ("\n",)
    assert how.cpu_threads == 3


def test_unchecked_settings_turn_the_sampler_off() -> None:
    config = {
        P + "topPSampling": {"checked": False, "value": 0.5},
        P + "minPSampling": {"checked": False, "value": 0.2},
        P + "repeatPenalty": {"checked": False, "value": 1.3},
        P + "maxPredictedTokens": {"checked": False, "value": 7},
    }
    how = plan(config, [{"key": "llm.load.seed", "value": {"checked": False, "value": 1}}])
    assert (how.sampling.top_p, how.sampling.min_p, how.sampling.repeat_penalty) == (
        1.0,
        0.0,
        1.0,
    )
    assert how.max_tokens is None
    assert how.sampling.seed == Sampling.seed


def test_the_python_sdks_false_turns_the_sampler_off() -> None:
    """The Python SDK sends ``maxTokens=False`` (and ``topPSampling=False``...) checked."""
    off = {"checked": True, "value": False}
    names = ("topPSampling", "minPSampling", "repeatPenalty", "maxPredictedTokens")
    how = plan({P + name: off for name in names}, [])
    sampling = how.sampling
    assert (sampling.top_p, sampling.min_p, sampling.repeat_penalty) == (1.0, 0.0, 1.0)
    assert how.max_tokens is None


def test_complete_mode_template_is_taken_from_the_config() -> None:
    setting = {
        "type": "jinja",
        "jinjaPromptTemplate": {"template": "{{ x }}", "bosToken": "", "eosToken": ""},
        "stopStrings": ["END"],
    }
    how = plan({P + "promptTemplate": setting, P + "stopStrings": ["\n"]}, [])
    assert how.template == "{{ x }}"
    assert how.bos_token == ""
    assert how.stops == ("\n", "END")


def test_a_manual_templates_stop_strings_are_kept_too() -> None:
    """``stopStrings`` belong to every template type (lmstudio-js's ``LLMPromptTemplate``);
    a manual template's were dropped."""
    setting = {"type": "manual", "manualPromptTemplate": {}, "stopStrings": ["END", "\n"]}
    how = plan({P + "promptTemplate": setting, P + "stopStrings": ["\n"]}, [])
    assert how.template is None
    assert how.stops == ("\n", "END")


def test_template_fallbacks() -> None:
    assert template_for("{{ own }}", "gemma3") == "{{ own }}"
    assert template_for(None, "gemma3") == GEMMA_TEMPLATE
    assert template_for("", "llama") == CHATML_TEMPLATE


def _scan(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    scanner = StopScanner(stops)
    out = ""
    for piece in pieces:
        out += scanner.feed(piece)
        if scanner.found:
            return out, True
    return out + scanner.flush(), False


def test_stop_string_split_across_pieces_is_cut() -> None:
    assert _scan(["ab", "c<", "/e", "nd>tail"], ("</end>",)) == ("abc", True)


def test_the_scanner_names_the_earliest_stop_string() -> None:
    # The llama.cpp engine reports it as ``stats.stopString``.
    scanner = StopScanner(("END", "STOP"))
    assert scanner.feed("alpha STOP beta END") == "alpha "
    assert scanner.found == "STOP"


def test_text_that_only_looks_like_a_stop_start_is_released() -> None:
    scanner = StopScanner(("STOP",))
    assert scanner.feed("xST") == "x"
    assert scanner.feed("ART") == "START"
    assert not scanner.found


@given(
    st.lists(st.text(alphabet="abS", max_size=4), max_size=8),
    st.text(alphabet="abS", min_size=1, max_size=3),
)
def test_stop_scanner_equals_cutting_the_whole_text(pieces: list[str], stop: str) -> None:
    text = "".join(pieces)
    out, found = _scan(pieces, (stop,))
    index = text.find(stop)
    if index >= 0:
        # The first occurrence may complete in a piece after an earlier, longer match;
        # either way, nothing at or after the stop string is released.
        assert found
        assert out == text[:index]
    else:
        assert (out, found) == (text, False)


@pytest.mark.parametrize("stops", [(), ("x",)])
def test_no_stop_strings_means_no_holding(stops: tuple[str, ...]) -> None:
    scanner = StopScanner(stops)
    assert scanner.feed("abc") == "abc"


def test_a_repetition_whose_maximum_is_below_its_minimum_is_found() -> None:
    # llama.cpp 0.3.36 takes "a"{3,1} and allocates memory until the process is killed
    # (24 GB here, then the OOM killer): the engine must refuse it before llama.cpp sees it.
    assert reversed_repetition('root ::= "a"{3,1}') == "{3,1}"
    assert reversed_repetition('root ::= x\nx ::= [a-z]{ 5 , 2 } "b"') == "{ 5 , 2 }"
    assert reversed_repetition('root ::= "a"{3,3} "b"{0,} "c"{2} "d"{1,4}') is None
    # Inside literals, classes and comments, braces are text.
    assert reversed_repetition('root ::= "{3,1}" [{3,1}] # x{3,1}\n') is None


def test_grammar_depth_counts_groups_not_literals_classes_or_comments() -> None:
    assert grammar_depth('root ::= "(" [()\\]] x # ((((\nx ::= ("a" ("\\"(" b)?)*)') == 2
    assert grammar_depth("root ::= " + '("a" ' * 50 + ")?" * 50) == 50
