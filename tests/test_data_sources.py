"""Loading training data from local files and the Hub, labels given as names, pairs, causal-LM blocks, and the
dynamic padding of the collator."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from helpers.cli_fixtures import tiny_tokenizer
from transformers import DataCollatorWithPadding

from distilkit.data import (
    encode_label_names,
    label_names,
    load_hub_split,
    load_splits,
    prepare_causal_lm,
    prepare_classification,
    read_table,
    subsample,
)

ROWS = [{"sentence": "the film was good", "other": "it was fine", "label": 1},
        {"sentence": "the meal was bad", "other": "the day was dull", "label": 0},
        {"sentence": "a very nice room", "other": "that show", "label": 1}]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_every_local_format_gives_the_same_rows(tmp_path, suffix):
    path = tmp_path / f"train{suffix}"
    if suffix == ".csv":
        path.write_text("sentence,other,label\n"
                        + "".join(f"{r['sentence']},{r['other']},{r['label']}\n" for r in ROWS))
    elif suffix == ".tsv":
        path.write_text("sentence\tother\tlabel\n" + "".join(f"{r['sentence']}\t{r['other']}\t{r['label']}\n"
                                                           for r in ROWS))
    elif suffix in (".json", ".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        Dataset.from_list(ROWS).to_parquet(str(path))
    splits = load_splits(train_file=path, validation_file=path)
    assert set(splits) == {"train", "validation"}
    assert splits["train"]["sentence"] == [r["sentence"] for r in ROWS]
    assert [int(v) for v in splits["train"]["label"]] == [1, 0, 1]


def test_text_file_is_one_document_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\nsecond line\n")
    assert read_table(path)["text"] == ["first line", "second line"]


def test_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        load_splits()


def test_pairs_are_tokenised_together_and_padded_per_batch():
    tokenizer = tiny_tokenizer()
    data = prepare_classification(Dataset.from_list(ROWS), tokenizer, "sentence", "label", text_pair_column="other")
    first = data[0]
    # [CLS] sentence [SEP] other [SEP]: the second text has token type 1.
    assert first["input_ids"][0] == tokenizer.cls_token_id
    assert first["input_ids"].count(tokenizer.sep_token_id) == 2
    assert 1 in first["token_type_ids"] and first["token_type_ids"][0] == 0
    batch = DataCollatorWithPadding(tokenizer)([data[0], data[2]])
    longest = max(len(data[0]["input_ids"]), len(data[2]["input_ids"]))
    assert batch["input_ids"].shape == (2, longest)  # padded to the longest in the batch, not to max_length


def test_label_names_become_sorted_indices():
    splits = {"train": Dataset.from_list([{"t": "x", "y": "positive"}, {"t": "y", "y": "negative"}]),
              "validation": Dataset.from_list([{"t": "z", "y": "negative"}])}
    names = label_names(splits, "y")
    assert names == ["negative", "positive"]
    assert encode_label_names(splits["train"], "y", names)["y"] == [1, 0]
    with pytest.raises(ValueError, match="not among the training labels"):
        encode_label_names(Dataset.from_list([{"t": "x", "y": "neutral"}]), "y", names)
    assert label_names({"train": Dataset.from_list(ROWS)}, "label") is None  # integers stay integers


def test_causal_lm_text_is_cut_into_full_blocks():
    tokenizer = tiny_tokenizer()
    tokenizer.eos_token = "[SEP]"
    corpus = Dataset.from_list([{"text": "the film was good and the meal was bad"}, {"text": ""},
                                {"text": "a very nice room with a bright warm day"}])
    blocks = prepare_causal_lm(corpus, tokenizer, "text", block_size=4)
    assert len(blocks) == 20 // 4  # 9 + 1 eos + 9 + 1 eos tokens
    assert all(len(ids) == 4 for ids in blocks["input_ids"])
    stream = sum(blocks["input_ids"], [])
    assert stream.count(tokenizer.eos_token_id) == 2
    with pytest.raises(ValueError, match="fewer than 64 tokens"):
        prepare_causal_lm(corpus, tokenizer, "text", block_size=64)


def test_subsample_is_seeded():
    data = Dataset.from_list([{"i": i} for i in range(20)])
    assert subsample(data, 5, seed=3)["i"] == subsample(data, 5, seed=3)["i"]
    assert len(subsample(data, 50)) == 20


def test_unreachable_hub_fails_fast_and_explains_local_files(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ConnectionError) as info:
        load_hub_split("glue", "sst2", "train")
    message = str(info.value)
    assert "'glue' (config 'sst2'), split 'train'" in message and "cannot be reached" in message
    assert "train_file:" in message and "validation_file:" in message and "HF_HUB_OFFLINE=1" in message


def test_shared_glue_files_load_with_their_quirks(shared_data):
    # MRPC: byte-order mark, unbalanced quotes, pairs.
    mrpc = shared_data / "mrpc"
    splits = load_splits(train_file=mrpc / "train.tsv", validation_file=mrpc / "test.tsv")
    assert len(splits["train"]) == 4076 and len(splits["validation"]) == 1725
    assert {"Quality", "#1 String", "#2 String"} <= set(splits["train"].column_names)
