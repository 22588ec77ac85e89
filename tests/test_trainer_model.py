"""The GPT model (shapes, tying, init, presets, generation) and the optimizer's groups and schedule."""
from __future__ import annotations

import math

import pytest
import torch

from reference_trainer.model import GPT, GPTConfig, preset
from reference_trainer.optim import build_optimizer, lr_factor

SMALL = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50)


def test_forward_gives_logits_and_a_loss_near_uniform_at_init():
    torch.manual_seed(0)
    model = GPT(SMALL)
    idx, targets = torch.randint(0, 50, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 50)
    # small init: the first predictions are close to uniform over the vocabulary
    assert loss.item() == pytest.approx(math.log(50), abs=0.1)
    assert model(idx)[1] is None
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_output_projection_is_tied_to_the_token_embedding_and_residual_projections_are_scaled():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=16, vocab_size=100))
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_parameters() == sum(p.numel() for n, p in model.named_parameters())  # counted once
    residual = torch.cat([b.attn.proj.weight.flatten() for b in model.blocks]
                         + [b.mlp.proj.weight.flatten() for b in model.blocks])
    assert residual.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_presets_and_overrides():
    assert preset("tiny") == GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
    assert preset("tiny", n_layer=2, dropout=None).n_layer == 2
    with torch.device("meta"):  # shapes only: no memory for 124M parameters
        gpt2 = GPT(preset("gpt2-124m", vocab_size=50257))
    assert gpt2.num_parameters() == 124_439_808  # GPT-2 small, with its tied embedding
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)


def test_generate_appends_tokens_and_crops_the_context():
    torch.manual_seed(0)
    model = GPT(SMALL).eval()
    prompt = torch.randint(0, 50, (2, 10))
    out = model.generate(prompt, max_new_tokens=20, temperature=1.0, top_k=5)
    assert out.shape == (2, 30) and torch.equal(out[:, :10], prompt)  # beyond block_size 16: cropped, no error
    greedy = [model.generate(prompt, max_new_tokens=5, temperature=0) for _ in range(2)]
    assert torch.equal(*greedy)


def test_weight_decay_applies_to_matrices_only():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20, bias=True))
    decay, no_decay = build_optimizer(model, 1e-3, 0.1, torch.device("cpu")).param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for p in decay["params"] + no_decay["params"]) == model.num_parameters()


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_minimum():
    factors = [lr_factor(step, warmup_steps=10, decay_steps=110, min_ratio=0.1) for step in range(130)]
    assert factors[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert factors[10] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55)  # half way down the cosine
    assert factors[110:] == pytest.approx([0.1] * 20)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
