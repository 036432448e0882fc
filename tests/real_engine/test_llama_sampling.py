"""The emulator's llama.cpp engine samples as llama.cpp's server does (the real Gemma 3 270M).

The reference is llama.cpp itself, called through llama-cpp-python's low-level API the way
its server samples: one sampler chain (penalties, then greedy) that is given every prompt
token once the prompt is processed, and then samples and accepts one token at a time.
"""

from __future__ import annotations

import ctypes
import os

import llama_cpp as L
import lmstudio as lms

from outlines_lmstudio.testing import LMStudioEmulator, embedded_model
from outlines_lmstudio.testing._llama_native import model_params
from tests.real_engine.conftest import EMBEDDED_MODEL_KEY

_MAX_TOKENS = 30


def _server_greedy(
    prompt: str, *, add_special: bool, flash_attention: bool | None = None, penalty: float = 1.1
) -> str:
    """Greedy reply of llama.cpp's server, by default at LM Studio's repeat penalty (1.1, 64)."""
    gguf = embedded_model().gguf
    assert gguf is not None
    model = L.llama_model_load_from_file(os.fsencode(gguf), model_params())
    assert model is not None
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 4096, 512, 512
    params.n_threads = params.n_threads_batch = 2
    if flash_attention is not None:
        params.flash_attn_type = (
            L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attention else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
    ctx = L.llama_init_from_model(model, params)
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    try:
        vocab = L.llama_model_get_vocab(model)
        data = prompt.encode()
        ids = (L.llama_token * (len(data) + 8))()
        n = L.llama_tokenize(vocab, data, len(data), ids, len(ids), add_special, True)
        tokens = list(ids[:n])
        penalties = L.llama_sampler_init_penalties(L.llama_vocab_n_tokens(vocab), 64, penalty, 0, 0)
        L.llama_sampler_chain_add(chain, penalties)
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        for token in tokens:  # server-context.cpp: common_sampler_accept(slot.smpl, id, false)
            L.llama_sampler_accept(chain, token)
        reply: list[int] = []
        for _ in range(_MAX_TOKENS):
            batch = (L.llama_token * len(tokens))(*tokens)
            assert L.llama_decode(ctx, L.llama_batch_get_one(batch, len(tokens))) == 0
            token = L.llama_sampler_sample(chain, ctx, -1)  # accepts the token too
            if L.llama_vocab_is_eog(vocab, token):
                break
            reply.append(token)
            tokens = [token]
        text = ctypes.create_string_buffer(4096)
        out = (L.llama_token * len(reply))(*reply)
        size = L.llama_detokenize(vocab, out, len(reply), text, len(text), False, False)
        return text.raw[:size].decode("utf-8", "replace")
    finally:
        L.llama_sampler_free(chain)
        L.llama_free(ctx)
        L.llama_model_free(model)


def test_the_repeat_penalty_counts_the_prompt(emulator: LMStudioEmulator) -> None:
    greedy: lms.LlmPredictionConfigDict = {"temperature": 0, "maxTokens": _MAX_TOKENS}
    chat = lms.Chat()
    chat.add_user_message("Extract the person as JSON: Mary Smith, aged 40, lives in Berlin.")
    with lms.Client(emulator.api_host) as client:
        # Each prompt on an instance of its own, whose context holds nothing yet: a prefix
        # kept from an earlier prompt (the <bos> these share) is not computed again, and
        # the rest, computed as another batch, may round otherwise than one batch of the
        # whole prompt does, enough to tip a greedy choice (this chat reply did on an AMD
        # EPYC host: "...It has three dimensions: height (h)" against "...age, gender").
        model = client.llm.load_new_instance(EMBEDDED_MODEL_KEY, "penalty-completion")
        completion = model.complete("The quick brown fox", config=greedy).content
        model.unload()
        model = client.llm.load_new_instance(EMBEDDED_MODEL_KEY, "penalty-chat")
        templated = model.apply_prompt_template(chat)
        reply = model.respond(chat, config=greedy).content
        model.unload()
    # Before: the penalty counted sampled tokens only. The completion went on "The
    # long-term consequences of a lack of sleep" where llama.cpp's server (its penalty
    # window starting with "The quick brown fox") writes "I'm not sure", and the reply
    # was "The model is a 4-page document", not "The model is a simple one-dimensional".
    assert completion == _server_greedy("The quick brown fox", add_special=True)
    assert reply == _server_greedy(templated, add_special=False)


def test_a_load_s_flash_attention_setting_is_llama_cpp_s(emulator: LMStudioEmulator) -> None:
    """Found by a probe: ``flashAttention`` was ignored, and llama.cpp's default ("auto", on
    for the CPU) gave other greedy replies than a context without it."""
    greedy: lms.LlmPredictionConfigDict = {
        "temperature": 0,
        "maxTokens": _MAX_TOKENS,
        "repeatPenalty": False,  # without it, flash attention changed this reply here
    }
    chat = lms.Chat()
    chat.add_user_message("Write a poem about the sea.")
    replies = {}
    with lms.Client(emulator.api_host) as client:
        for flash in (False, True):
            model = client.llm.load_new_instance(
                EMBEDDED_MODEL_KEY, f"flash-{flash}", config={"flashAttention": flash}
            )
            templated = model.apply_prompt_template(chat)
            replies[flash] = model.respond(chat, config=greedy).content
            model.unload()
    for flash, reply in replies.items():
        expected = _server_greedy(templated, add_special=False, flash_attention=flash, penalty=1.0)
        assert reply == expected
