"""Teacher outputs computed once per training example and kept on disk.

The teacher forward is up to half of a distillation step. Its logits do not change during training (the teacher
is frozen and run without dropout), so distilkit computes them in one pass, stores them under a key made of the
dataset's fingerprint and a hash of the teacher's weights and config, and feeds them to the loss from the data
loader. A changed dataset or teacher gives a new key; a folder is published with an atomic rename
(`distilkit.serialization.atomic`), so several processes (or an interrupted run) never read a half-written cache.

Classifiers store all logits. Language models store the top-k logits per position plus the log-normaliser at the
training temperature (`teacher_cache_top_k`), which keeps the file small while the soft-label loss stays exact
on those k tokens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from torch.utils.data import DataLoader

from .data import pop_teacher_inputs
from .serialization.atomic import publishing_folder
from .tasks import Task, output_size

logger = logging.getLogger(__name__)

CACHE_COLUMNS = ("teacher_logits", "teacher_topk_values", "teacher_topk_indices", "teacher_lse")
_FORMAT_VERSION = 1


# Config fields transformers sets while a model runs (the first forward with labels sets problem_type, a Trainer
# turns use_cache off); they change neither the logits nor what the teacher is, so they stay out of its hash.
RUN_TIME_CONFIG_FIELDS = ("problem_type", "use_cache")


def teacher_fingerprint(teacher: torch.nn.Module) -> str:
    """sha256 of the teacher's config (less `RUN_TIME_CONFIG_FIELDS`) and every tensor of its state dict (names,
    dtypes, shapes, bytes): the same before and after the teacher was evaluated or trained against."""
    digest = hashlib.sha256()
    config = getattr(teacher, "config", None)
    if config is not None:
        fields = {k: v for k, v in config.to_dict().items() if k not in RUN_TIME_CONFIG_FIELDS}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in teacher.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:32]


def dataset_fingerprint(dataset) -> str:
    """The fingerprint that keys `dataset`'s cache; a clear error for data that has none."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint is None:
        raise ValueError(
            "teacher_cache_dir needs a datasets.Dataset as train_dataset (its fingerprint keys the cache); got "
            f"{type(dataset).__name__}."
        )
    return fingerprint


def cache_key(dataset: Dataset, teacher_hash: str, task: Task, top_k: int | None, temperature: float) -> str:
    spec = {"v": _FORMAT_VERSION, "data": dataset_fingerprint(dataset), "teacher": teacher_hash, "task": task.value, "top_k": top_k,
            # The log-normaliser of top-k caches depends on the temperature; full logits do not.
            "temperature": temperature if top_k else None}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _per_example(task: Task, logits: torch.Tensor, attention_mask: torch.Tensor | None, top_k: int | None,
                 temperature: float) -> list[dict]:
    """Split a batch of teacher logits into one record per example (real tokens only for token tasks)."""
    rows = []
    for i in range(logits.shape[0]):
        row_logits = logits[i]
        if task.token_level and attention_mask is not None:
            row_logits = row_logits[attention_mask[i].bool()]
        if top_k:
            values, indices = row_logits.topk(top_k, dim=-1)
            lse = torch.logsumexp(row_logits / temperature, dim=-1)
            rows.append({"teacher_topk_values": values.tolist(), "teacher_topk_indices": indices.tolist(),
                         "teacher_lse": lse.tolist()})
        else:
            rows.append({"teacher_logits": row_logits.tolist()})
    return rows


@torch.inference_mode()
def compute_teacher_outputs(dataset: Dataset, teacher: torch.nn.Module, collator, task: Task, top_k: int | None,
                            temperature: float, batch_size: int, device, progress: bool = True) -> Dataset:
    """One pass of the teacher over `dataset` (with a progress bar unless `progress` is False); returns a Dataset
    of per-example cached outputs, in `dataset`'s order.

    The examples are batched shortest first (by the length of the inputs the teacher reads), so that a batch pads
    to about its own length rather than to the longest example that happens to share it. For a model that masks
    its padding, a row's outputs do not depend on which rows share its batch (beyond float rounding; tested)."""
    from tqdm.auto import tqdm

    teacher.eval()
    order = _shortest_first(dataset)
    loader = DataLoader(dataset.select(order), batch_size=batch_size, shuffle=False, collate_fn=collator)
    rows: list[dict | None] = [None] * len(dataset)
    position = 0
    for batch in tqdm(loader, desc="Caching teacher outputs", disable=not progress):
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels" and torch.is_tensor(v)}
        # A teacher with its own tokenizer reads its own `teacher_` inputs (see data.TeacherInputsCollator).
        inputs = pop_teacher_inputs(inputs) or inputs
        logits = teacher(**inputs).logits.float()
        for row in _per_example(task, logits.cpu(), inputs.get("attention_mask", None), top_k, temperature):
            rows[order[position]] = row
            position += 1
    return Dataset.from_list(rows)


def _shortest_first(dataset: Dataset) -> list[int]:
    """Row indices sorted by input length (stable: equal lengths keep the dataset's order)."""
    column = next((c for c in ("teacher_input_ids", "input_ids") if c in dataset.column_names), None)
    if column is None:
        return list(range(len(dataset)))
    lengths = [len(ids) for ids in dataset[column]]
    return sorted(range(len(dataset)), key=lengths.__getitem__)


def estimated_bytes(dataset: Dataset, task: Task, width: int, top_k: int | None) -> int:
    """About how many bytes the cache of `dataset` takes on disk (Arrow float64/int64 lists, 10% overhead)."""
    if task.token_level:
        column = "attention_mask" if "attention_mask" in dataset.column_names else "input_ids"
        items = sum(sum(row) if column == "attention_mask" else len(row) for row in dataset[column])
    else:
        items = len(dataset)
    per_item = (top_k * 16 + 8) if top_k else width * 8  # top-k: values, indices and the log-normaliser
    return int(items * per_item * 1.1)


def check_disk_space(dataset: Dataset, task: Task, width: int, top_k: int | None,
                     cache_dir: str | os.PathLike) -> None:
    """Refuse, before the teacher pass, a cache that would not fit on the disk of `cache_dir`."""
    needed = estimated_bytes(dataset, task, width, top_k)
    probe = Path(cache_dir)
    while not probe.exists():  # the nearest existing folder is on the disk the cache will be written to
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise ValueError(
            f"The teacher-output cache of {len(dataset)} examples needs about {needed / 2**20:,.0f} MiB in "
            f"teacher_cache_dir={str(cache_dir)!r}, but that disk has {free / 2**20:,.0f} MiB free. Point "
            "teacher_cache_dir at a larger disk, keep fewer logits (teacher_cache_top_k), or cache fewer examples "
            "(with transfer data: fewer transfer examples, max_transfer_samples in a recipe)."
        )


def load_or_build(dataset: Dataset, teacher: torch.nn.Module, collator, cache_dir: str | os.PathLike, task: Task,
                  top_k: int | None, temperature: float, batch_size: int, device, args,
                  input_columns: Sequence[str] | None = None) -> Dataset:
    """`dataset` with the cached teacher columns added, building the cache on the main process if needed.

    `input_columns`: the columns the teacher pass collates (as the Trainer keeps only the columns the model's
    forward accepts, `remove_unused_columns`); None collates every column. A raw text column left in the data
    then never reaches the collator. The build is announced at WARNING level before and after (it can take
    minutes, and the progress bar may be off)."""
    teacher_hash = teacher_fingerprint(teacher)
    key = cache_key(dataset, teacher_hash, task, top_k, temperature)
    folder = Path(cache_dir) / key
    with args.main_process_first(local=False, desc="teacher output cache"):
        if not folder.is_dir():
            check_disk_space(dataset, task, output_size(teacher, task), top_k, cache_dir)
            logger.warning("Computing the teacher's outputs for %d training examples (once; cached in %s).",
                           len(dataset), folder)
            started = time.perf_counter()
            inputs = dataset if input_columns is None else dataset.select_columns(
                [c for c in dataset.column_names if c in set(input_columns)])
            cached = compute_teacher_outputs(inputs, teacher, collator, task, top_k, temperature, batch_size, device,
                                             progress=not args.disable_tqdm)
            # readers see no folder or a complete one; a folder another process published first is kept
            with publishing_folder(folder, keep_existing=True) as staging:
                cached.save_to_disk(str(staging))
            logger.warning("Teacher outputs for %d examples computed in %.0f s and cached in %s.", len(dataset),
                           time.perf_counter() - started, folder)
        else:
            logger.info("Reusing the teacher output cache in %s", folder)
        cached = load_from_disk(str(folder))
    if len(cached) != len(dataset):
        raise ValueError(f"Teacher cache {folder} has {len(cached)} rows for a dataset of {len(dataset)}; delete it.")
    existing = [c for c in CACHE_COLUMNS if c in dataset.column_names]
    if existing:
        dataset = dataset.remove_columns(existing)
    for column in cached.column_names:
        dataset = dataset.add_column(column, cached[column])
    return dataset


class CachedTeacherCollator:
    """Wraps a data collator: cached teacher columns are taken out of the features, the rest is collated as
    usual, and the cached outputs are padded back to the batch's positions (real tokens where the attention
    mask is 1, whichever side the padding is on)."""

    def __init__(self, collator, token_level: bool):
        self.collator = collator
        self.token_level = token_level

    def __call__(self, features):
        cached = [{k: f.pop(k) for k in CACHE_COLUMNS if k in f} for f in features]
        batch = self.collator(features)
        for key in cached[0]:
            values = [torch.tensor(c[key]) for c in cached]
            if not self.token_level:
                batch[key] = torch.stack(values)
                continue
            mask = batch["attention_mask"].bool()
            fill = -1 if key == "teacher_topk_indices" else 0.0
            out = torch.full((*mask.shape, *values[0].shape[1:]), fill, dtype=values[0].dtype)
            for i, v in enumerate(values):
                out[i][mask[i]] = v
            batch[key] = out
        return batch
