"""Data augmentation (distilkit.augment, `distilkit augment`): replacement candidates checked against a direct
computation on the embedding matrix and the masked LM's logits, seeded copies, sentence pairs, labels, the errors
before any work, and the command's atomic output. Tiny models and a word-level tokenizer built here."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset
from helpers.cli_fixtures import NEGATIVE, NEUTRAL, POSITIVE, SPECIAL, save_tiny_teacher, sentences, write_data
from helpers.tiny_models import tiny_model
from transformers import BertTokenizer

from distilkit.augment import AugmentArguments, augment_dataset
from distilkit.augment.candidates import EmbeddingNeighbours, MaskedLMCandidates
from distilkit.augment.words import split_words
from distilkit.cli import main
from distilkit.data import read_table

PIECES = ["##ness", "##ly"]  # continuation pieces: 'goodness' is good + ##ness, a multi-piece word


def tokenizer() -> BertTokenizer:
    words = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + PIECES
    return BertTokenizer(vocab={word: i for i, word in enumerate(words)})


TOKENIZER = tokenizer()
VOCAB = len(TOKENIZER.get_vocab())
WHOLE_WORD_IDS = [i for token, i in TOKENIZER.get_vocab().items() if token not in SPECIAL and token not in PIECES]


def teacher(task: str = "seq"):
    return tiny_model(task, "bert", seed=0, vocab_size=VOCAB, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def data(n: int = 4, pairs: bool = False) -> Dataset:
    return Dataset.from_list(sentences(n, seed=3, pairs=pairs))


def direct_top(scores: torch.Tensor, word: str, k: int) -> list[str]:
    """The k best whole words by `scores` (one per vocabulary id), the word itself left out."""
    ranked = sorted(WHOLE_WORD_IDS, key=lambda i: -float(scores[i]))
    words = [TOKENIZER.convert_ids_to_tokens(i) for i in ranked]
    return [w for w in words if w != word][:k]


# ---- replacement candidates ----


def test_split_words_separates_punctuation_and_keeps_contractions():
    assert split_words("Nice, isn't it?") == ["Nice", ",", "isn't", "it", "?"]
    assert split_words("it 's a well-made film ...") == ["it", "'s", "a", "well-made", "film", "..."]


@pytest.mark.parametrize("word", ["good", "film", "sad", "goodness"])
def test_embedding_neighbours_are_the_top_m_cosine_neighbours(word):
    model = teacher()
    embeddings = model.get_input_embeddings().weight.detach()
    pieces = TOKENIZER(word, add_special_tokens=False)["input_ids"]
    assert len(pieces) == (2 if word == "goodness" else 1)
    cosine = F.cosine_similarity(embeddings, embeddings[pieces].mean(0, keepdim=True), dim=-1)
    neighbours = EmbeddingNeighbours(embeddings, TOKENIZER, num_candidates=7)(word)
    assert neighbours == direct_top(cosine, word, 7)
    assert word not in neighbours
    assert not set(neighbours) & set(SPECIAL + PIECES)


def test_unknown_word_has_no_neighbours():
    assert EmbeddingNeighbours(teacher().get_input_embeddings().weight, TOKENIZER, 5)("zebra") == []


def test_masked_lm_candidates_are_its_top_m_for_the_masked_word_in_one_batched_forward():
    model = teacher("masked").eval()
    texts = [row["sentence"].split() for row in sentences(4, seed=3)]
    requests = [(words, i) for words in texts for i in range(len(words))]
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    found = MaskedLMCandidates(model, TOKENIZER, num_candidates=5, batch_size=64)(requests)
    assert len(calls) == 1  # every masked copy of every sentence in one forward pass
    calls.clear()
    for (words, i), candidates in zip(requests, found):
        masked = " ".join(words[:i] + ["[MASK]"] + words[i + 1:])
        encoded = TOKENIZER(masked, return_tensors="pt")
        position = encoded["input_ids"][0].tolist().index(TOKENIZER.mask_token_id)
        with torch.no_grad():
            logits = model(**encoded).logits[0, position]
        assert candidates == direct_top(logits, words[i], 5)


def test_a_word_cut_off_by_truncation_gets_no_masked_lm_candidates():
    mlm = MaskedLMCandidates(teacher("masked"), TOKENIZER, num_candidates=3)
    mlm.max_length = 6
    words = "the film was good and the book was sad".split()
    found = mlm([(words, 1), (words, 8)])
    assert len(found[0]) == 3 and found[1] == []


def test_replacement_with_a_masked_lm_uses_it_for_single_piece_words_and_neighbours_for_the_others():
    model = teacher("masked").eval()
    text = "the film was goodness and sad"
    args = AugmentArguments(augment_mlm="teacher", replace_prob=1.0, num_copies=6, num_candidates=3)
    copies = augment_dataset(Dataset.from_dict({"text": [text]}), TOKENIZER, "text", teacher=model, args=args)
    words = text.split()
    neighbours = EmbeddingNeighbours(model.get_input_embeddings().weight, TOKENIZER, 3)
    mlm = MaskedLMCandidates(model, TOKENIZER, 3)(
        [(words, i) for i, word in enumerate(words) if word != "goodness"])
    allowed = [mlm[i] if i < 3 else (neighbours("goodness") if i == 3 else mlm[i - 1]) for i in range(len(words))]
    for copy in copies["text"]:
        replaced = copy.split()
        assert len(replaced) == len(words)
        for new, options in zip(replaced, allowed):
            assert new in options  # replace_prob 1: every word is replaced by one of its candidates


def test_a_named_fill_mask_folder_gives_what_the_same_model_gives_as_the_teacher(tmp_path):
    model = teacher("masked").eval()
    model.save_pretrained(tmp_path / "mlm")
    TOKENIZER.save_pretrained(tmp_path / "mlm")
    args = AugmentArguments(replace_prob=0.5, num_copies=4, augment_mlm=str(tmp_path / "mlm"))
    named = augment_dataset(data(), None, "sentence", args=args)
    args.augment_mlm = "teacher"
    assert named["sentence"] == augment_dataset(data(), TOKENIZER, "sentence", teacher=model, args=args)["sentence"]
    assert named["sentence"] != [text for text in data()["sentence"] for _ in range(4)]


# ---- copies ----


def test_num_copies_per_example_in_example_order():
    copies = augment_dataset(data(3), TOKENIZER, "sentence", teacher=teacher(), args=AugmentArguments(num_copies=5))
    assert len(copies) == 15
    originals = data(3)["sentence"]
    for index, copy in enumerate(copies["sentence"]):
        assert len(copy.split()) == len(originals[index // 5].split())  # replacement keeps the length


def test_same_seed_same_copies_other_seed_other_copies_whatever_the_chunk_size():
    model = teacher()

    def run(seed, batch_size=32):
        args = AugmentArguments(methods=["replace", "mask", "ngram"], num_copies=4, augment_seed=seed)
        return augment_dataset(data(6), TOKENIZER, "sentence", teacher=model, args=args,
                               batch_size=batch_size)["sentence"]

    assert run(1) == run(1) == run(1, batch_size=1)
    assert run(1) != run(2)


def test_nothing_changes_with_zero_probabilities():
    texts = ["Nice, isn't it?", "the film was good"]
    args = AugmentArguments(methods=["replace", "mask", "ngram"], replace_prob=0, mask_prob=0, ngram_prob=0,
                            num_copies=3)
    copies = augment_dataset(Dataset.from_dict({"text": texts}), TOKENIZER, "text", teacher=teacher(), args=args)
    assert copies["text"] == [texts[0]] * 3 + [texts[1]] * 3


def test_mask_uses_the_tokenizers_mask_token_and_spares_punctuation():
    args = AugmentArguments(methods=["mask"], mask_prob=1.0, num_copies=2)
    copies = augment_dataset(Dataset.from_dict({"text": ["good , sad ."]}), TOKENIZER, "text", args=args)
    assert copies["text"] == ["[MASK] , [MASK] ."] * 2


def test_sentence_pairs_stay_pairs_and_each_text_gets_its_own_ngram():
    original = data(4, pairs=True)
    args = AugmentArguments(methods=["ngram"], ngram_prob=1.0, num_copies=5)
    copies = augment_dataset(original, None, "sentence", "other", args=args)
    assert copies.column_names == ["sentence", "other"] and len(copies) == 20
    for index, row in enumerate(copies):
        source = original[index // 5]
        for column in ("sentence", "other"):
            words, part = source[column].split(), row[column].split()
            assert 1 <= len(part) <= 5
            assert any(words[i:i + len(part)] == part for i in range(len(words)))  # an n-gram of its own text


def test_labels_are_dropped_by_default_and_kept_with_keep_labels():
    original = data(4).cast_column("label", ClassLabel(names=["neg", "pos"]))
    dropped = augment_dataset(original, TOKENIZER, "sentence", args=AugmentArguments(methods=["mask"], num_copies=2))
    assert dropped.column_names == ["sentence"]
    kept = augment_dataset(original, TOKENIZER, "sentence",
                           args=AugmentArguments(methods=["mask"], num_copies=2, keep_labels=True))
    assert kept["label"] == [label for label in original["label"] for _ in range(2)]
    assert kept.features["label"] == original.features["label"]


# ---- errors before any work ----


def test_replace_without_a_source_names_the_fix():
    with pytest.raises(ValueError, match="nothing to pick replacement words from.*augment_mlm"):
        augment_dataset(data(), TOKENIZER, "sentence", args=AugmentArguments())


def test_missing_text_column_is_named_with_the_columns_present_before_any_model_is_loaded():
    args = AugmentArguments(augment_mlm="/no/such/model")  # loading it would fail differently
    with pytest.raises(ValueError, match=r"text_column 'text' is not a column.*\['sentence', 'label'\]"):
        augment_dataset(data(), TOKENIZER, "text", args=args)
    with pytest.raises(ValueError, match="text_pair_column 'other'"):
        augment_dataset(data(), TOKENIZER, "sentence", "other", args=args)


def test_empty_dataset_is_an_error():
    empty = Dataset.from_dict({"sentence": [], "label": []})
    with pytest.raises(ValueError, match="dataset is empty"):
        augment_dataset(empty, TOKENIZER, "sentence", teacher=teacher())


def test_teacher_as_masked_lm_needs_a_masked_lm_head():
    with pytest.raises(ValueError, match="augment_mlm='teacher' but the teacher .*has no masked-LM head"):
        augment_dataset(data(), TOKENIZER, "sentence", teacher=teacher(), args=AugmentArguments(augment_mlm="teacher"))


def test_keep_labels_without_the_label_column_and_mask_without_a_mask_token():
    with pytest.raises(ValueError, match="label_column 'gold'"):
        augment_dataset(data(), TOKENIZER, "sentence", label_column="gold",
                        args=AugmentArguments(methods=["mask"], keep_labels=True))
    with pytest.raises(ValueError, match="'mask' but the tokenizer has no mask token"):
        augment_dataset(data(), None, "sentence", args=AugmentArguments(methods=["mask"]))


@pytest.mark.parametrize("kwargs, field", [({"methods": ["swap"]}, "methods"), ({"replace_prob": 1.5}, "replace_prob"),
                                           ({"num_copies": 0}, "num_copies"), ({"methods": []}, "methods")])
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        AugmentArguments(**kwargs)


def test_methods_may_be_given_as_one_comma_separated_text():
    assert AugmentArguments(methods="mask,ngram").methods == ["mask", "ngram"]


# ---- the command ----


def run_cli(tmp_path, output: str, *flags, pairs: bool = False):
    teacher_dir = save_tiny_teacher(tmp_path / "teacher")
    train, _ = write_data(tmp_path / "data", n_train=4, pairs=pairs)
    argv = ["augment", "--teacher", str(teacher_dir), "--augment_input", str(train), "--text_column", "sentence",
            "--augment_output", str(tmp_path / output), "--num_copies", "3", *flags]
    return main(argv), train


@pytest.mark.parametrize("output", ["aug.csv", "aug.tsv", "aug.jsonl"])
def test_cli_writes_the_copies_in_the_format_of_the_suffix(tmp_path, output):
    status, train = run_cli(tmp_path, output, "--text_pair_column", "other", "--keep_labels", "true", pairs=True)
    assert status == 0
    written = read_table(tmp_path / output)
    assert len(written) == 12 and sorted(written.column_names) == ["label", "other", "sentence"]
    assert [int(v) for v in written["label"]] == [int(v) for v in read_table(train)["label"] for _ in range(3)]
    text = (tmp_path / output).read_text(encoding="utf-8")
    if output.endswith(".jsonl"):
        assert json.loads(text.splitlines()[0]).keys() == {"sentence", "other", "label"}
    else:
        assert text.splitlines()[0] == ("sentence,other,label" if output.endswith(".csv") else "sentence\tother\tlabel")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cli_failure_midway_leaves_no_output_file(tmp_path, monkeypatch):
    from distilkit import data as command

    def fail_midway(dataset, path):
        path.write_text("sentence\nhalf", encoding="utf-8")
        raise OSError("disk full")

    monkeypatch.setitem(command.WRITERS, ".csv", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        run_cli(tmp_path, "aug.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "teacher"]  # no output, no temporary file


def test_cli_errors_come_before_any_work(tmp_path, capsys):
    train, _ = write_data(tmp_path / "data", n_train=4)
    output = tmp_path / "aug.csv"
    assert main(["augment", "--augment_input", str(train), "--augment_output", str(output),
                 "--text_column", "sentence"]) == 2
    assert "nothing to pick replacement words from" in capsys.readouterr().err
    assert main(["augment", "--augment_input", str(train), "--augment_output", str(output),
                 "--methods", "ngram"]) == 2
    assert "text_column 'text' is not a column" in capsys.readouterr().err
    assert not output.exists()
