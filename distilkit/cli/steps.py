"""The steps the commands are made of: check the launch, load data and models, train, prune, quantize, save.

A run writes one folder per stage under `output_dir`: teacher/, student/, pruned/, int8/, and the comparison
table (results.md, results.json) at the top. Only the main process writes; the other processes of a
distributed run take part in training and stop after it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..config import DistillationConfig
from ..data import (
    TeacherInputsCollator,
    encode_label_names,
    label_names,
    load_splits,
    prepare_causal_lm,
    prepare_classification,
    subsample,
)
from ..serialization import compression_record
from .parser import RecipeError
from .recipe import DataArguments, ModelArguments, PruneArguments, QuantizeArguments

CPU_CONFIGS = "recipes/accelerate"  # in the distilkit repository


# ---- the launch ----


def check_launch(training: DistillationConfig) -> None:
    """Stop when the processes the launcher started do not form the world the Trainer will train in.

    Two traps, both silent otherwise: `accelerate launch --multi_gpu` (or torchrun) on a machine without GPUs
    starts N processes that each train alone on all the data unless `use_cpu` is set; and accelerate's CPU
    launcher (`--cpu`, or distributed_type MULTI_CPU without mpirun) starts one process whatever num_processes
    says.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training.world_size != launched:
        fix = (
            "On a machine without GPUs the processes join one (gloo) process group only with use_cpu: add "
            "`use_cpu: true` under `training:` in the recipe, or pass --use_cpu true."
            if not torch.cuda.is_available() else
            f"Check that the launcher's num_processes ({launched}) matches the GPUs the Trainer can use and that "
            "use_cpu is not set."
        )
        raise RecipeError(
            f"The launcher started {launched} processes (WORLD_SIZE={launched}), but the Trainer sees a world size "
            f"of {training.world_size}: each process would train on its own, on all the data, and write the same "
            f"output_dir. {fix}"
        )
    mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if ("WORLD_SIZE" not in os.environ and "ACCELERATE_MIXED_PRECISION" in os.environ
            and "MASTER_PORT" in os.environ and not mpi):
        # accelerate's simple launcher exports MASTER_PORT only when it was asked for more than one process.
        raise RecipeError(
            "accelerate launch was asked for several processes but started only this one: its CPU launcher "
            "(`--cpu`, or distributed_type: MULTI_CPU without mpirun) runs a single process. For N processes on "
            f"CPU launch with `--config_file {CPU_CONFIGS}/cpu_2proc_gloo.yaml` (distributed_type: MULTI_GPU, "
            "num_processes: N) and set `use_cpu: true` in the recipe; for one process use num_processes: 1 "
            f"({CPU_CONFIGS}/cpu_1proc.yaml)."
        )


def is_main_process(training: DistillationConfig) -> bool:
    return training.process_index == 0


def stage_dir(training: DistillationConfig, stage: str) -> Path:
    return Path(training.output_dir) / stage


def stage_args(training: DistillationConfig, stage: str, **changes) -> DistillationConfig:
    """The training arguments of one stage: output in output_dir/<stage>, plus `changes`."""
    return dataclasses.replace(training, output_dir=str(stage_dir(training, stage)), **changes)


# ---- data ----


@dataclasses.dataclass
class TaskData:
    train: object | None
    validation: object | None
    collator: object
    num_labels: int | None = None
    label_names: list[str] | None = None
    description: str = ""  # the validation data, where the metrics come from


def describe_data(data: DataArguments, split: str = "train") -> str:
    """A short name of the data, e.g. "glue/sst2 (validation)" or "dev.tsv"."""
    if data.dataset:
        name = data.dataset + (f"/{data.dataset_config}" if data.dataset_config else "")
        return f"{name} ({data.train_split if split == 'train' else data.validation_split})"
    path = data.train_file if split == "train" else data.validation_file
    return Path(path).name if path else "(no data)"


def load_task_data(data: DataArguments, tokenizer, task: str, seed: int = 42, teacher_tokenizer=None) -> TaskData:
    """Read, check and tokenise the data; every mistake is reported before a model is loaded or trained.

    `teacher_tokenizer`: a teacher whose tokenizer differs from the student's also gets the text tokenised its
    own way (sequence classification only; see distilkit.data.TeacherInputsCollator).
    """
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if not data.has_source:
        raise RecipeError(
            "The recipe names no data: set data.dataset (a Hub dataset) or data.train_file and "
            "data.validation_file (local csv/tsv/json/jsonl/parquet files)."
        )
    try:
        splits = load_splits(data.dataset, data.dataset_config, data.train_file, data.validation_file,
                             data.train_split, data.validation_split)
        splits["train"] = subsample(splits["train"], data.max_train_samples, seed)
        if "validation" in splits:
            splits["validation"] = subsample(splits["validation"], data.max_eval_samples, seed)
        if task == "causal-lm":
            prepared = {name: prepare_causal_lm(split, tokenizer, data.text_column, data.max_length)
                        for name, split in splits.items()}
            collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
            return TaskData(prepared["train"], prepared.get("validation"), collator,
                            description=describe_data(data, "validation"))
        names = label_names(splits, data.label_column)
        if names is not None and not hasattr(splits["train"].features.get(data.label_column), "names"):
            splits = {k: encode_label_names(v, data.label_column, names) for k, v in splits.items()}
        if names is not None:
            num_labels = len(names)
        else:
            labels = [int(v) for split in splits.values() if data.label_column in split.column_names
                      for v in split[data.label_column]]
            num_labels = max(labels) + 1 if labels else None
        prepared = {
            name: prepare_classification(split, tokenizer, data.text_column, data.label_column,
                                         data.text_pair_column, data.max_length, num_labels,
                                         teacher_tokenizer=teacher_tokenizer if name == "train" else None)
            for name, split in splits.items()
        }
    except (ValueError, OSError, KeyError) as err:  # ConnectionError is an OSError
        raise RecipeError(f"data ({describe_data(data)}): {err}") from err
    collator = DataCollatorWithPadding(tokenizer)
    if teacher_tokenizer is not None:
        collator = TeacherInputsCollator(collator, teacher_tokenizer)
    return TaskData(prepared["train"], prepared.get("validation"), collator,
                    num_labels=num_labels, label_names=names, description=describe_data(data, "validation"))


# ---- models ----


def _auto_class(task: str):
    import transformers

    return (transformers.AutoModelForCausalLM if task == "causal-lm"
            else transformers.AutoModelForSequenceClassification)


def teacher_tokenizer_if_different(model_args: ModelArguments, student_tokenizer, task: str):
    """The teacher's own tokenizer when the student (a separate model) tokenises differently, else None."""
    if not model_args.student or model_args.tokenizer:
        return None  # a student built from the teacher, or one tokenizer named for both
    try:
        teacher_tokenizer = load_tokenizer(model_args.teacher, task)
    except RecipeError:
        return None  # the teacher folder ships no tokenizer: it is read with the student's
    if teacher_tokenizer.get_vocab() == student_tokenizer.get_vocab():
        return None
    if task != "sequence-classification":
        raise RecipeError(
            f"The teacher ({model_args.teacher}) and the student ({model_args.student}) tokenise differently; "
            f"distilling them needs aligned positions, which {task} does not have. Use a student with the "
            "teacher's tokenizer."
        )
    return teacher_tokenizer


def load_tokenizer(source: str, task: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise RecipeError(f"Could not load a tokenizer from {source!r}: {err}") from err
    if task == "causal-lm" and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need padding; padded positions get no loss
    return tokenizer


def attention_for(model_args: ModelArguments, training: DistillationConfig | None) -> str | None:
    if model_args.attn_implementation:
        return model_args.attn_implementation
    if training is not None and training.attention_weight > 0:
        return "eager"
    return None


def load_model(source: str, task: str, role: str, num_labels: int | None = None,
               label_names: list[str] | None = None, attn_implementation: str | None = None,
               new_head: bool = False):
    """A model with the task's head from a folder or Hub id; pruned or int8 folders go through distilkit.

    `new_head`: the classifier is to be trained (`train`), so a saved head of another size is replaced by a fresh
    one instead of being an error.
    """
    from ..serialization import from_pretrained, load_config

    try:
        config = load_config(source)
        if compression_record(config):
            model = from_pretrained(source)
        else:
            kwargs = {}
            if num_labels is not None and task != "causal-lm":
                names = label_names or [f"LABEL_{i}" for i in range(num_labels)]
                kwargs.update(num_labels=num_labels, id2label=dict(enumerate(names)),
                              label2id={name: i for i, name in enumerate(names)})
                if new_head:
                    kwargs["ignore_mismatched_sizes"] = True
            if attn_implementation:
                kwargs["attn_implementation"] = attn_implementation
            model = _auto_class(task).from_pretrained(source, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise RecipeError(f"Could not load the {role} from {source!r} as a {task} model: {err}") from err
    if attn_implementation and getattr(model.config, "_attn_implementation", None) != attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model


def check_num_labels(model, data: TaskData, role: str) -> None:
    if data.num_labels is not None and getattr(model.config, "num_labels", None) not in (None, data.num_labels):
        raise RecipeError(
            f"The {role} has {model.config.num_labels} labels but the data has {data.num_labels}; use a {role} "
            "fine-tuned on this task (distilkit train), or set num_labels."
        )


def build_student(model_args: ModelArguments, teacher, task: str, training: DistillationConfig | None):
    from ..student import student_from_teacher

    if model_args.student:
        return load_model(model_args.student, task, "student", attn_implementation=attention_for(model_args, training))
    if model_args.keep_layers is None:
        raise RecipeError("No student: set model.student (a folder or Hub id) or model.student_layers (build it "
                          "from the teacher by keeping that many of its layers).")
    try:
        return student_from_teacher(teacher, model_args.keep_layers)
    except ValueError as err:
        raise RecipeError(f"model.student_layers={model_args.student_layers!r}: {err}") from err


# ---- training ----


def train(model, args: DistillationConfig, data: TaskData, tokenizer, teacher=None, compute_metrics=None):
    """Train `model` (distilling from `teacher` when given), save it to args.output_dir, and return the trainer."""
    from transformers import Trainer

    from ..trainer import DistillationTrainer

    kwargs = dict(model=model, args=args, train_dataset=data.train, eval_dataset=data.validation,
                  data_collator=data.collator, processing_class=tokenizer, compute_metrics=compute_metrics)
    if args.eval_strategy != "no" and data.validation is None:
        raise RecipeError(f"eval_strategy={args.eval_strategy!r} needs validation data (data.validation_file or "
                          "data.validation_split).")
    trainer = DistillationTrainer(teacher_model=teacher, **kwargs) if teacher is not None else Trainer(**kwargs)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    return trainer


# ---- compression ----


def prune(model, data: TaskData, prune_args: PruneArguments, batch_size: int, seed: int,
          training: DistillationConfig | None = None) -> dict[int, list[int]]:
    """Remove `prune_fraction` of the heads (in place); returns {layer: [removed heads]}.

    In a distributed run the main process chooses the heads and every process removes the same ones.
    """
    try:
        from ..pruning import prune_heads, prune_to_fraction
    except ImportError as err:
        raise RecipeError(f"Head pruning is not available in this installation ({err}).") from err
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    removed: dict[int, list[int]] = {}
    if not distributed or torch.distributed.get_rank() == 0:
        loader = None
        if prune_args.prune_method == "taylor":
            loader = torch.utils.data.DataLoader(
                data.train, batch_size=batch_size, shuffle=True, collate_fn=data.collator,
                generator=torch.Generator().manual_seed(seed),
            )
        try:
            _, removed = prune_to_fraction(model, loader, prune_args.prune_fraction, prune_args.prune_method,
                                           num_batches=prune_args.prune_batches,
                                           min_heads_per_layer=prune_args.prune_min_heads_per_layer)
        except ValueError as err:
            raise RecipeError(f"prune: {err}") from err
    if distributed:
        box = [removed]
        torch.distributed.broadcast_object_list(box, src=0)
        if torch.distributed.get_rank() != 0:
            removed = box[0]
            prune_heads(model, removed)
    return removed


def quantize(model, quantize_args: QuantizeArguments):
    try:
        from ..quantization import quantize_dynamic
    except ImportError as err:
        raise RecipeError(f"Int8 quantization is not available in this installation ({err}).") from err
    try:
        return quantize_dynamic(model, skip=quantize_args.quantize_skip,
                                quantize_embeddings=quantize_args.quantize_embeddings)
    except ValueError as err:
        raise RecipeError(f"quantize: {err}") from err


def save(model, tokenizer, folder: Path) -> Path:
    from ..serialization import save_pretrained

    return save_pretrained(model, folder, tokenizer)


def head_count(model) -> int | None:
    """Attention heads left in the model (None for a family distilkit cannot prune)."""
    try:
        from ..pruning import kept_heads

        return sum(len(heads) for heads in kept_heads(model))
    except (ImportError, ValueError, KeyError, AttributeError):
        return None
