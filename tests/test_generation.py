"""Tests for thr.models.generation on a tiny random Qwen2 model loaded from a save_pretrained folder."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from thr.models.generation import HFGenerator, Sample, generate, make_generator, stop_token_ids_for
from thr.models.tiny import build_model, build_tokenizer



@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models: extra threads only contend on a shared 2-core box (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

PROMPTS = ["Problem: 1+1\nSolution:", "hi", "Compute (23+45)*3-17. Show the steps, please."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("tiny_gen")
    tok = build_tokenizer()
    build_model(tok, hidden_size=64, num_layers=2, max_position_embeddings=1024).save_pretrained(path)
    tok.save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture()
def force_token(tiny: tuple[Any, Any]) -> Iterator[Any]:
    """``force(token_id)`` makes the model always emit ``token_id`` (a logits hook) until the test ends."""
    model, _ = tiny
    handles = []

    def force(token_id: int) -> None:
        def hook(_module: Any, _inputs: Any, logits: torch.Tensor) -> torch.Tensor:
            logits = logits.clone()
            logits[..., token_id] += 1e4
            return logits

        handles.append(model.lm_head.register_forward_hook(hook))

    yield force
    for h in handles:
        h.remove()


def test_shapes_and_fields(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    out = generate(model, tok, PROMPTS, n=3, temperature=1.0, max_new_tokens=12, batch_size=4, seed=0)
    assert len(out) == len(PROMPTS) and all(len(row) == 3 for row in out)
    for i, row in enumerate(out):
        for s in row:
            assert isinstance(s, Sample) and s.prompt_index == i
            assert s.prompt_ids == tok(PROMPTS[i])["input_ids"]
            assert 1 <= len(s.response_ids) <= 12
            assert s.text == tok.decode(s.response_ids, skip_special_tokens=True)
            if s.finish_reason == "length":
                assert len(s.response_ids) == 12 and tok.eos_token_id not in s.response_ids
            else:
                assert s.finish_reason == "stop" and s.response_ids[-1] == tok.eos_token_id
    assert generate(model, tok, [], n=2) == []


def test_greedy_is_deterministic_and_copied(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    a = generate(model, tok, PROMPTS, n=3, temperature=0, max_new_tokens=10)
    b = generate(model, tok, PROMPTS, n=1, temperature=0, max_new_tokens=10, batch_size=1)
    for row_a, row_b in zip(a, b):
        assert all(s.response_ids == row_a[0].response_ids for s in row_a)
        assert row_a[0].response_ids == row_b[0].response_ids  # batching/padding does not change greedy output


def test_seeded_sampling_reproducible_and_caller_rng_untouched(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = generate(model, tok, PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = generate(model, tok, PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=7)
    c = generate(model, tok, PROMPTS, n=4, temperature=1.0, max_new_tokens=8, seed=8)
    ids = lambda out: [[s.response_ids for s in row] for row in out]
    assert ids(a) == ids(b) and ids(a) != ids(c)
    assert len({tuple(s.response_ids) for s in a[0]}) > 1  # n samples differ


def test_checkpoint_sampling_defaults_are_neutralised(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    model.generation_config.top_k = 1  # would make sampling greedy if left in place
    try:
        out = generate(model, tok, PROMPTS[:1], n=6, temperature=1.0, max_new_tokens=6, seed=3)
    finally:
        model.generation_config.top_k = None
    assert len({tuple(s.response_ids) for s in out[0]}) > 1


def test_training_mode_restored(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    model.train()
    generate(model, tok, PROMPTS[:1], n=1, temperature=0, max_new_tokens=2)
    assert model.training
    model.eval()
    generate(model, tok, PROMPTS[:1], n=1, temperature=0, max_new_tokens=2)
    assert not model.training


def test_eos_gives_stop_and_empty_text(tiny: tuple[Any, Any], force_token: Any) -> None:
    model, tok = tiny
    force_token(tok.eos_token_id)
    (row,) = generate(model, tok, PROMPTS[:1], n=2, temperature=1.0, max_new_tokens=8, seed=0)
    for s in row:
        assert s.response_ids == [tok.eos_token_id] and s.finish_reason == "stop" and s.text == ""


def test_stop_token_in_batch_excludes_padding(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    (ref,) = generate(model, tok, PROMPTS[:1], temperature=0, max_new_tokens=16)
    ids = ref[0].response_ids
    j = next(j for j in range(2, len(ids)) if ids[j] not in ids[:j])
    stop = [ids[j]]
    batched = generate(model, tok, PROMPTS, temperature=0, max_new_tokens=16, stop_token_ids=stop)
    assert batched[0][0].response_ids == ids[: j + 1] and batched[0][0].finish_reason == "stop"
    for i, prompt in enumerate(PROMPTS):
        (single,) = generate(model, tok, [prompt], temperature=0, max_new_tokens=16, stop_token_ids=stop)
        assert batched[i][0].response_ids == single[0].response_ids
        assert batched[i][0].finish_reason == single[0].finish_reason


def test_stop_strings(tiny: tuple[Any, Any], force_token: Any) -> None:
    model, tok = tiny
    force_token(ord("x"))
    (row,) = generate(model, tok, PROMPTS[:1], temperature=0, max_new_tokens=10, stop_strings=["xxx"])
    assert row[0].text == "xxx" and row[0].finish_reason == "stop" and len(row[0].response_ids) == 3


def test_stop_token_ids_for_chat_prompts() -> None:
    tok = build_tokenizer()
    assert stop_token_ids_for(tok, "<|im_start|>user\nhi<|im_end|>\n") == []  # not in this vocabulary
    tok.add_tokens(["<|im_end|>"], special_tokens=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids_for(tok, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") == [im_end]
    assert stop_token_ids_for(tok, "Problem: 1+1\nSolution:") == []


def test_chat_end_of_turn_token_ends_response() -> None:
    tok = build_tokenizer()
    tok.add_tokens(["<|im_end|>"], special_tokens=True)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model = build_model(tok, hidden_size=32, num_layers=1, num_heads=2)
    model.lm_head.register_forward_hook(lambda _m, _i, out: out + 1e4 * (torch.arange(out.shape[-1]) == im_end))
    chat = "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    (row,) = generate(model, tok, [chat], temperature=0, max_new_tokens=4)
    assert row[0].response_ids == [im_end] and row[0].finish_reason == "stop" and row[0].text == ""
    (row,) = generate(model, tok, ["plain prompt"], temperature=0, max_new_tokens=4)
    assert row[0].response_ids == [im_end] * 4 and row[0].finish_reason == "length"


def test_make_generator(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    gen = make_generator("hf", model, tok)
    assert isinstance(gen, HFGenerator)
    out = gen.generate(PROMPTS[:2], n=2, temperature=0, max_new_tokens=3)
    assert [len(r) for r in out] == [2, 2]
    with pytest.raises(ValueError, match="'hf' or 'vllm'"):
        make_generator("tgi", model, tok)
    with pytest.raises(ValueError, match="needs a loaded model"):
        make_generator("hf", "some/path")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match=r"pip install 'thr-rl\[vllm\]'"):
            make_generator("vllm", "some/path")


def test_bad_arguments(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    with pytest.raises(ValueError, match="n, batch_size and max_new_tokens"):
        generate(model, tok, PROMPTS, n=0)
    with pytest.raises(ValueError, match="temperature >= 0"):
        generate(model, tok, PROMPTS, temperature=-1.0)
