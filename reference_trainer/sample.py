"""Generate text from a checkpoint (``trackkit-train sample``)."""
from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import DOCUMENT_SEPARATOR, Tokenizer, tokenizer_from_json
from .engine import pick_device
from .errors import InputError
from .model import GPT, GPTConfig


def load_model(folder: Path, device: torch.device) -> tuple[GPT, Tokenizer]:
    """The checkpoint's model (weights only, in eval mode) and its tokenizer."""
    checkpoint = ckpt.read(folder)
    model = GPT(GPTConfig(**checkpoint.meta["model"]))
    try:
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    except Exception as exc:  # truncated file or foreign tensors
        raise InputError(f"checkpoint {str(folder)!r} cannot be loaded: {ckpt.describe(exc)}") from None
    return model.to(device).eval(), tokenizer_from_json(checkpoint.meta["tokenizer"])


def generate_text(
    folder: Path, prompt: str, max_new_tokens: int, temperature: float, top_k: int, num_samples: int, seed: int,
    device: str,
) -> list[str]:
    """``num_samples`` continuations of ``prompt`` (prompt included)."""
    if max_new_tokens < 1 or num_samples < 1 or temperature < 0 or top_k < 0:
        raise InputError("--max-new-tokens and --num-samples must be positive, --temperature and --top-k not negative")
    torch_device = pick_device(device)
    model, tokenizer = load_model(folder, torch_device)
    torch.manual_seed(seed)
    # With no prompt, start where documents start: after a document separator.
    start = tokenizer.encode(prompt or DOCUMENT_SEPARATOR)
    if not start:
        raise InputError("the prompt encodes to no tokens")
    idx = torch.tensor([start] * num_samples, dtype=torch.long, device=torch_device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k or None)
    skip = 0 if prompt else len(start)
    return [tokenizer.decode(row[skip:].tolist()) for row in out]
