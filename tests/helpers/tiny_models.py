"""Tiny random models and datasets for tests. No downloads: everything is built from a config."""

from __future__ import annotations

import torch
import transformers as tf
from transformers import TrainerCallback
from datasets import Dataset

VOCAB = 100
SEQ = 12


def save_tiny_tokenizer(folder) -> None:
    """A word-piece tokenizer of VOCAB tokens ("[PAD]" ... "[MASK]", then "w0", "w1", ...) saved in `folder` the way
    transformers 5 saves it (tokenizer.json + tokenizer_config.json, without vocab.txt: those must be enough)."""
    from pathlib import Path

    vocab = Path(folder) / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]))
    tf.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)
    vocab.unlink()


def tiny_config(family: str = "bert", hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, **kw):
    common = dict(vocab_size=kw.pop("vocab_size", VOCAB), **kw)
    if family == "bert":
        return tf.BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=2 * hidden, max_position_embeddings=64, **common)
    if family == "roberta":
        return tf.RobertaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                intermediate_size=2 * hidden, max_position_embeddings=64, pad_token_id=1, **common)
    if family == "distilbert":
        return tf.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=2 * hidden,
                                   max_position_embeddings=64, **common)
    if family == "mpnet":
        return tf.MPNetConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=2 * hidden, max_position_embeddings=64, **common)
    if family == "llama":
        return tf.LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads, intermediate_size=2 * hidden,
                              max_position_embeddings=64, pad_token_id=0, **common)
    if family == "qwen2":
        return tf.Qwen2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              num_key_value_heads=kv_heads, intermediate_size=2 * hidden,
                              max_position_embeddings=64, pad_token_id=0, **common)
    raise ValueError(family)


def tiny_model(task: str = "seq", family: str = "bert", seed: int = 0, attn: str = "eager", **config_kw):
    """A tiny model for `task` in {'seq', 'token', 'causal', 'masked'} with a fixed seed."""
    auto = {
        "seq": tf.AutoModelForSequenceClassification,
        "token": tf.AutoModelForTokenClassification,
        "causal": tf.AutoModelForCausalLM,
        "masked": tf.AutoModelForMaskedLM,
    }[task]
    if task in ("seq", "token"):
        config_kw.setdefault("num_labels", 3)
    config = tiny_config(family, **config_kw)
    torch.manual_seed(seed)
    return auto.from_config(config, attn_implementation=attn)


def tiny_dataset(task: str = "seq", n: int = 16, seed: int = 0, num_labels: int = 3, pairs: bool = False) -> Dataset:
    """Random token sequences with variable length (so batches are padded) and labels for `task`."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(4, SEQ + 1, (1,), generator=g))
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        row = {"input_ids": ids, "attention_mask": [1] * length}
        if pairs:
            row["token_type_ids"] = [0] * (length // 2) + [1] * (length - length // 2)
        if task == "seq":
            row["labels"] = int(torch.randint(0, num_labels, (1,), generator=g))
        elif task == "token":
            labels = torch.randint(0, num_labels, (length,), generator=g).tolist()
            labels[0] = -100  # e.g. a special token without a label
            row["labels"] = labels
        elif task in ("causal", "masked"):
            row["labels"] = list(ids)
        rows.append(row)
    return Dataset.from_list(rows)


def pad_collator(features):
    """Right-pad to the longest sequence; labels of token tasks are padded with -100."""
    batch = {}
    for key in features[0]:
        values = [f[key] for f in features]
        if isinstance(values[0], list):  # each column to its own longest row (teacher_ inputs may be longer)
            length = max(len(v) for v in values)
            fill = -100 if key == "labels" else 0
            values = [v + [fill] * (length - len(v)) for v in values]
        batch[key] = torch.tensor(values)
    return batch


class StopAt(TrainerCallback):
    """Ends training after `step` optimizer steps, as a kill would (the LR schedule still spans the whole run)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
