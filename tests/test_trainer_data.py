"""Corpus reading (.txt, folders with .jsonl, globs, the built-in corpus), tokenizers, splits and epochs."""
from __future__ import annotations

import json
import math

import pytest
import torch
from trainer_util import SMALL_MODEL, english, train

from reference_trainer.data import (
    EpochBatches,
    Windows,
    build_tokenizer,
    corpus_files,
    read_corpus,
    split,
    tokenizer_from_json,
    unigram_entropy,
)
from reference_trainer.errors import InputError

CHINESE = "床前明月光，疑是地上霜。举头望明月，低头思故乡。"


def test_a_txt_file_a_folder_with_jsonl_and_a_glob(tmp_path):
    (tmp_path / "a.txt").write_text("first file", encoding="utf-8")
    nested = tmp_path / "more"
    nested.mkdir()
    (nested / "b.jsonl").write_text(
        json.dumps({"text": "doc one", "id": 1}) + "\n\n" + json.dumps({"text": CHINESE}) + "\n", encoding="utf-8")
    (nested / "ignored.csv").write_text("x,y")
    assert read_corpus(str(tmp_path / "a.txt")) == ["first file"]
    assert read_corpus(str(tmp_path)) == ["first file", "doc one", CHINESE]
    assert read_corpus(str(tmp_path / "**" / "*.jsonl")) == ["doc one", CHINESE]
    assert [p.name for p in corpus_files(str(tmp_path / "*.txt"))] == ["a.txt"]


def test_the_built_in_corpus_is_the_python_documentation_topics():
    documents = read_corpus(None)
    assert len(documents) > 50 and 400_000 < sum(map(len, documents)) < 600_000
    assert any("assignment statement" in doc.lower() for doc in documents)


def test_invalid_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(InputError, match=r"d.jsonl:2 is not valid JSON"):
        read_corpus(str(tmp_path / "d.jsonl"))


@pytest.mark.parametrize("kind", ["byte", "char", "bpe"])
def test_tokenizers_round_trip_english_and_chinese_and_reload_from_json(kind):
    documents = [english(20_000), CHINESE * 3]
    tokenizer = build_tokenizer(kind, documents, bpe_vocab_size=400)
    for text in ("The assignment statement binds names.", CHINESE):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert all(0 <= i < tokenizer.vocab_size for i in ids)
        # saved as JSON with the run, then loaded back: the very same ids
        assert tokenizer_from_json(json.loads(json.dumps(tokenizer.to_json()))).encode(text) == ids
    sizes = {"byte": 256, "char": len(set("".join(documents)) | {"\n"}), "bpe": 400}
    assert tokenizer.vocab_size == sizes[kind]
    if kind == "byte":
        assert len(tokenizer.encode(CHINESE)) == 3 * len(CHINESE)  # three UTF-8 bytes per character
    if kind == "bpe":  # merges learned: fewer tokens than bytes
        assert len(tokenizer.encode(english(2000))) < 0.6 * len(english(2000).encode())


def test_split_keeps_at_least_one_window_for_validation():
    tokens = torch.arange(200, dtype=torch.int32)
    train_part, val = split(tokens, 0.1, block_size=32)
    assert len(val) == 33 and torch.equal(torch.cat([train_part, val]), tokens)
    train_part, val = split(torch.arange(1000, dtype=torch.int32), 0.1, block_size=32)
    assert len(val) == 100
    with pytest.raises(InputError, match="shorter than one block"):
        split(torch.arange(32, dtype=torch.int32), 0.1, block_size=32)


def test_an_epoch_visits_every_window_once_in_a_seeded_order_reshuffled_per_epoch():
    tokens = torch.arange(1001, dtype=torch.int32)  # token value = its position, so windows are readable
    windows = Windows(tokens, block_size=10)
    assert windows.count == 100
    batches = EpochBatches(windows, batch_size=4, grad_accum=2, seed=7)
    assert batches.steps_per_epoch == 12  # 96 windows used, 4 left over
    starts = []
    for position in range(batches.steps_per_epoch):
        micro = batches.micro_batches(0, position)
        assert len(micro) == 2
        for x, y in micro:
            assert x.shape == y.shape == (4, 10) and x.dtype == torch.int64
            assert torch.equal(y, x + 1)  # the targets are the next tokens
            starts += x[:, 0].tolist()
    assert len(set(starts)) == 96 and all(s % 10 == 0 for s in starts)  # non-overlapping, none twice
    order = lambda b, epoch: b.order(epoch).tolist()  # noqa: E731
    again = EpochBatches(windows, batch_size=4, grad_accum=2, seed=7)
    assert order(batches, 0) == order(again, 0) and order(batches, 1) == order(again, 1)
    assert order(batches, 0) != order(batches, 1)
    assert order(batches, 0) != order(EpochBatches(windows, 4, 2, seed=8), 0)


def test_evaluation_windows_come_in_corpus_order():
    windows = Windows(torch.arange(101, dtype=torch.int32), block_size=10)
    firsts = [x[:, 0].tolist() for x, _ in windows.in_order(batch_size=4, max_batches=2)]
    assert firsts == [[0, 10, 20, 30], [40, 50, 60, 70]]
    assert sum(len(x) for x, _ in windows.in_order(batch_size=4)) == 10


def test_unigram_entropy():
    assert unigram_entropy(torch.tensor([0, 1, 2, 3] * 5)) == pytest.approx(math.log(4))
    assert unigram_entropy(torch.tensor([5] * 9)) == pytest.approx(0.0)


def test_training_on_chinese_with_bytes_and_on_english_with_bpe(tmp_path):
    chinese = tmp_path / "poems.txt"
    chinese.write_text((CHINESE + "\n") * 40, encoding="utf-8")
    out = tmp_path / "zh"
    result = train("--data", chinese, "--tokenizer", "byte", *SMALL_MODEL, "--output-dir", out, "--max-steps", 4,
                   "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "tokenizer.json").read_text()) == {"kind": "byte"}
    assert json.loads((out / "trackkit" / "config.json").read_text())["vocab_size"] == 256

    (tmp_path / "en.txt").write_text(english(30_000), encoding="utf-8")
    out = tmp_path / "bpe"
    result = train("--data", tmp_path / "en.txt", "--tokenizer", "bpe", "--bpe-vocab-size", 500, *SMALL_MODEL,
                   "--output-dir", out, "--max-steps", 4, "--tracker", "jsonl")
    assert result.exit_code == 0, result.output
    saved = tokenizer_from_json(json.loads((out / "tokenizer.json").read_text()))
    assert saved.vocab_size == 500 and saved.decode(saved.encode("Python names")) == "Python names"
    assert json.loads((out / "checkpoints" / "last" / "tokenizer.json").read_text()) == saved.to_json()
    sample = train("sample", "--checkpoint", out / "checkpoints" / "last", "--prompt", "The ", "--max-new-tokens", 5)
    assert sample.exit_code == 0 and sample.output.startswith("The ")
