"""Text in, batches of token windows out.

1. ``read_corpus(--data)``: the documents of a .txt file, a folder of .txt/.jsonl files, or a
   glob; with no --data, the Python documentation topics that ship with every Python install.
2. ``build_tokenizer``: ``byte`` (UTF-8 bytes), ``char`` (the corpus's characters) or ``bpe``
   (trained here with the ``tokenizers`` library). ``tokenizer_from_json`` reloads a saved one.
3. ``split``: the token stream's last part is the validation set.
4. ``Windows`` cuts a split into non-overlapping windows of ``block_size`` tokens (plus the one
   target after them); ``EpochBatches`` visits every training window once per epoch, in an
   order reshuffled per epoch from the seed. The order of epoch e is a pure function of
   (seed, e), so a checkpoint only needs (epoch, position) to continue exactly. With several
   processes, every one computes the same order and takes its own share of each step.
"""
from __future__ import annotations

import glob
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from .errors import InputError

TEXT_SUFFIXES = (".txt", ".jsonl")
DOCUMENT_SEPARATOR = "\n\n"
BUILTIN_NAME = "pydoc_data.topics (built-in)"


# -- reading -------------------------------------------------------------------------------
def read_corpus(data: str | None) -> list[str]:
    """The documents named by ``--data`` (see module doc); raises InputError for bad input."""
    if data is None:
        from pydoc_data.topics import topics  # ~465 KB of English prose, part of the stdlib

        documents = [topics[key] for key in sorted(topics)]
    else:
        documents = [doc for path in corpus_files(data) for doc in _read_file(path)]
    if not any(doc.strip() for doc in documents):
        raise InputError(f"the corpus {data or BUILTIN_NAME!r} is empty: no text in it")
    return documents


def corpus_files(data: str) -> list[Path]:
    """The .txt and .jsonl files ``--data`` names, in a stable (sorted) order."""
    path = Path(data)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise InputError(f"data folder {data!r} has no .txt or .jsonl files")
        return files
    if glob.has_magic(data):
        files = sorted(Path(p) for p in glob.glob(data, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"no files match --data {data!r}")
        return files
    raise InputError(f"data path {data!r} does not exist")


def _read_file(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise InputError(f"{path} is not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix != ".jsonl":
        return [text]
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise InputError(f"{path}:{number} is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise InputError(f"{path}:{number} has no string 'text' field")
        documents.append(record["text"])
    return documents


# -- tokenizers ----------------------------------------------------------------------------
class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def to_json(self) -> dict: ...


class ByteTokenizer:
    """UTF-8 bytes: a fixed vocabulary of 256 that covers every language."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        # A sampled sequence may cut a multi-byte character in half; show it rather than fail.
        return bytes(ids).decode("utf-8", errors="replace")

    def to_json(self) -> dict:
        return {"kind": self.kind}


class CharTokenizer:
    """One token per character of the corpus's alphabet (sorted, so it is reproducible)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.vocab_size = len(chars)
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, documents: list[str]) -> CharTokenizer:
        alphabet = set(DOCUMENT_SEPARATOR)
        for doc in documents:
            alphabet.update(doc)
        return cls("".join(sorted(alphabet)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._index[c] for c in text]
        except KeyError as exc:
            raise InputError(f"character {exc.args[0]!r} is not in the char tokenizer's vocabulary") from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class BpeTokenizer:
    """Byte-level BPE from the ``tokenizers`` library, trained on the corpus itself."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def fit(cls, documents: list[str], vocab_size: int) -> BpeTokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tokenizer.train_from_iterator(documents, trainer)
        return cls(tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}


TOKENIZERS = ("byte", "char", "bpe")


def build_tokenizer(kind: str, documents: list[str], bpe_vocab_size: int) -> Tokenizer:
    """A tokenizer of ``kind`` fitted to ``documents`` (byte needs no fitting)."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.fit(documents)
    if kind == "bpe":
        return BpeTokenizer.fit(documents, bpe_vocab_size)
    raise InputError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZERS)}")


def tokenizer_from_json(spec: dict) -> Tokenizer:
    """The tokenizer ``Tokenizer.to_json`` described."""
    kind = spec.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(spec["chars"])
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BpeTokenizer(HFTokenizer.from_str(json.dumps(spec["tokenizer"])))
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def encode_corpus(tokenizer: Tokenizer, documents: list[str]) -> torch.Tensor:
    """The whole corpus as one stream of token ids (int32 keeps big corpora small in memory)."""
    return torch.tensor(tokenizer.encode(DOCUMENT_SEPARATOR.join(documents)), dtype=torch.int32)


def unigram_entropy(tokens: torch.Tensor) -> float:
    """Entropy in nats of the token frequencies: the loss of a model that ignores all context.

    A language model has learned something from context only when its loss is well below it.
    """
    counts = torch.bincount(tokens.long()).double()
    p = counts[counts > 0] / len(tokens)
    return float(-(p * p.log()).sum())


# -- splits, windows, epochs ---------------------------------------------------------------
def split(tokens: torch.Tensor, val_fraction: float, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation): the validation set is the stream's tail, at least one window long."""
    window = block_size + 1  # block_size inputs and the target after the last one
    if len(tokens) < window:
        raise InputError(
            f"the corpus has {len(tokens)} tokens, shorter than one block ({block_size} + 1); "
            "use more text or a smaller --block-size"
        )
    n_val = max(int(len(tokens) * val_fraction), window)
    return tokens[:-n_val], tokens[-n_val:]


class Windows:
    """Non-overlapping windows of ``block_size`` inputs; window i starts at i * block_size."""

    def __init__(self, tokens: torch.Tensor, block_size: int):
        self.tokens = tokens
        self.block_size = block_size
        self.count = max(0, (len(tokens) - 1) // block_size)
        self._offsets = torch.arange(block_size + 1)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, both (len(indices), block_size) int64."""
        rows = self.tokens[(indices * self.block_size)[:, None] + self._offsets].long()
        return rows[:, :-1], rows[:, 1:]

    def in_order(self, batch_size: int, max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of windows in corpus order (evaluation needs no shuffling)."""
        count = self.count if max_batches is None else min(self.count, max_batches * batch_size)
        for start in range(0, count, batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, count)))

    def shard(
        self, batch_size: int, max_batches: int, rank: int, world_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
        """Process ``rank``'s batches of ``in_order(batch_size, max_batches)``: numbers rank, rank + world_size, ...

        Each yields (inputs, targets, counted). Every process gets as many batches, because a
        forward pass can be a collective (ZeRO-3): one whose share runs out first repeats the
        first batch with counted False.
        """
        count = min(self.count, max_batches * batch_size)
        starts = range(0, count, batch_size)
        for i in range(math.ceil(len(starts) / world_size)):
            k = i * world_size + rank
            start = starts[k] if k < len(starts) else 0
            yield *self.batch(torch.arange(start, min(start + batch_size, count))), k < len(starts)


class EpochBatches:
    """The training schedule: optimizer step ``position`` of epoch ``epoch`` -> its micro-batches.

    An epoch is one pass over the training windows in a per-epoch shuffled order. Each
    optimizer step takes ``grad_accum`` micro-batches of ``batch_size`` windows on each of
    ``world_size`` processes; windows left over at the end of an epoch (fewer than one step's
    worth) are skipped that epoch. Process ``rank`` takes the rank-th share of every step, so
    the processes of one step see different windows and together the same ones as a single
    process with a batch ``world_size`` times larger.
    """

    def __init__(self, windows: Windows, batch_size: int, grad_accum: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.windows = windows
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.steps_per_epoch = windows.count // (batch_size * grad_accum * world_size)
        if self.steps_per_epoch == 0:
            processes = f" x {world_size} processes" if world_size > 1 else ""
            raise InputError(
                f"the training split has {windows.count} windows of {windows.block_size} tokens, fewer than one "
                f"step needs ({batch_size} x {grad_accum}{processes}); use more text, a smaller --batch-size or "
                "--block-size"
            )
        self._order: tuple[int, torch.Tensor] | None = None

    def order(self, epoch: int) -> torch.Tensor:
        """The window order of ``epoch`` (0-based), from its own generator: no global RNG is used."""
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(self.windows.count, generator=generator))
        return self._order[1]

    def micro_batches(self, epoch: int, position: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The ``grad_accum`` (inputs, targets) pairs of step ``position`` (0-based) in ``epoch``."""
        per_rank = self.batch_size * self.grad_accum
        first = (position * self.world_size + self.rank) * per_rank
        indices = self.order(epoch)[first:first + per_rank]
        return [self.windows.batch(chunk) for chunk in indices.split(self.batch_size)]
