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
    labels_to_model_ids,
    load_splits,
    prepare_causal_lm,
    prepare_classification,
    read_split,
    subsample,
    tokenize_texts,
)
from ..serialization import compression_record
from .parser import RecipeError
from .recipe import DataArguments, ModelArguments, QuantizeArguments

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
    transfer: object | None = None  # unlabelled examples the teacher labels (distilkit.transfer)


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

    if data.validation_file and not data.train_file:
        raise RecipeError(
            f"validation_file is set ({data.validation_file!r}) but train_file is not; training needs both local "
            "files (distilkit evaluate needs only validation_file)."
        )
    if not data.has_source:
        raise RecipeError(
            "The recipe names no data: set data.dataset (a Hub dataset) or data.train_file and "
            "data.validation_file (local csv/tsv/json/jsonl/parquet files)."
        )
    if data.has_transfer and task != "sequence-classification":
        raise RecipeError(
            f"Transfer data ({data.transfer_file or data.transfer_dataset}) works for sequence classification only, "
            f"not {task}: a causal LM's text is its own label, so add it to the training text instead."
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
    transfer = load_transfer_data(data, tokenizer, task, seed, teacher_tokenizer) if data.has_transfer else None
    return TaskData(prepared["train"], prepared.get("validation"), collator, num_labels=num_labels,
                    label_names=names, description=describe_data(data, "validation"), transfer=transfer)


def load_transfer_data(data: DataArguments, tokenizer, task: str, seed: int = 42, teacher_tokenizer=None):
    """data.transfer_file or data.transfer_dataset, tokenised like the training text, without labels."""
    source = data.transfer_file or data.transfer_dataset
    text_column = data.transfer_text_column or data.text_column
    pair_column = data.transfer_text_pair_column or data.text_pair_column
    try:
        split = read_split(data.transfer_file, data.transfer_dataset, data.transfer_dataset_config,
                           data.transfer_split)
        if data.label_column in split.column_names and not data.transfer_ignore_labels:
            raise ValueError(
                f"it has a label column {data.label_column!r}, but transfer data is text the teacher labels. Remove "
                "the column, add the rows to the training data instead, or set transfer_ignore_labels: true to use "
                "the text and never read the labels."
            )
        split = subsample(split, data.max_transfer_samples, seed)
        return tokenize_texts(split, tokenizer, text_column, pair_column, data.max_length, teacher_tokenizer)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"transfer data ({source}): {err}") from err


def check_augment(recipe) -> None:
    """What `distill`'s augment section may ask for, checked before anything is loaded."""
    a = recipe.augment
    given = [name for name in ("augment_input", "augment_output") if getattr(a, name)]
    if given:
        raise RecipeError(f"{', '.join(given)} belong to `distilkit augment` (it writes a file); distill augments "
                          "its training data itself with augment_train: true.")
    if not a.augment_train:
        return
    if recipe.model.task != "sequence-classification":
        raise RecipeError(f"augment_train adds unlabelled copies as transfer data, which works for sequence "
                          f"classification only, not {recipe.model.task}.")
    if a.keep_labels:
        raise RecipeError("distill adds augmented copies without labels (the teacher labels them); keep_labels is "
                          "for files written by `distilkit augment` (then give the file as train_file).")


def add_augmented_copies(data: TaskData, data_args: DataArguments, augment_args, tokenizer, seed: int, teacher,
                         teacher_tokenizer=None) -> TaskData:
    """`data` with augmented copies of its training text added to the transfer data (distilkit.augment): the raw
    training split is read again, altered with the teacher's tokenizer and embeddings, and tokenised like the rest."""
    from datasets import concatenate_datasets

    from ..augment import augment_dataset

    try:
        raw = read_split(data_args.train_file, data_args.dataset, data_args.dataset_config, data_args.train_split)
        raw = subsample(raw, data_args.max_train_samples, seed)
        copies = augment_dataset(raw, teacher_tokenizer or tokenizer, data_args.text_column,
                                 data_args.text_pair_column, teacher=teacher, args=augment_args,
                                 label_column=data_args.label_column)
        tokenized = tokenize_texts(copies, tokenizer, data_args.text_column, data_args.text_pair_column,
                                   data_args.max_length, teacher_tokenizer)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"augment: {err}") from err
    transfer = tokenized if data.transfer is None else concatenate_datasets([data.transfer, tokenized])
    return dataclasses.replace(data, transfer=transfer)


def load_eval_data(data: DataArguments, tokenizer, task: str, model, seed: int = 42) -> TaskData:
    """The validation data alone, for evaluating `model` (no training data needed): data.validation_file, or the
    validation split of data.dataset. Label names in the data map through the model's own label2id (then
    `label_names` is the model's names; None when the data gave integer labels)."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if not (data.validation_file or (data.dataset and data.validation_split)):
        raise RecipeError(
            "Nothing to evaluate on: set data.validation_file (a local csv/tsv/json/jsonl/parquet file) or "
            "data.dataset with data.validation_split."
        )
    description = describe_data(data, "validation")
    try:
        split = read_split(data.validation_file, data.dataset, data.dataset_config, data.validation_split)
        split = subsample(split, data.max_eval_samples, seed)
        if task == "causal-lm":
            prepared = prepare_causal_lm(split, tokenizer, data.text_column, data.max_length)
            return TaskData(None, prepared, DataCollatorForLanguageModeling(tokenizer, mlm=False),
                            description=description)
        mapped = labels_to_model_ids(split, data.label_column, dict(model.config.label2id))
        named = mapped is not split  # the data gave label names, now read through the model's label2id
        split, num_labels = mapped, model.config.num_labels
        prepared = prepare_classification(split, tokenizer, data.text_column, data.label_column,
                                          data.text_pair_column, data.max_length, num_labels)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"data ({description}): {err}") from err
    names = [model.config.id2label[i] for i in range(num_labels)] if named else None
    return TaskData(None, prepared, DataCollatorWithPadding(tokenizer), num_labels=num_labels, label_names=names,
                    description=description)


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

    kwargs = {"model": model, "args": args, "train_dataset": data.train, "eval_dataset": data.validation,
              "data_collator": data.collator, "processing_class": tokenizer, "compute_metrics": compute_metrics}
    if args.eval_strategy != "no" and data.validation is None:
        raise RecipeError(f"eval_strategy={args.eval_strategy!r} needs validation data (data.validation_file or "
                          "data.validation_split).")
    if teacher is not None:
        trainer = DistillationTrainer(teacher_model=teacher, transfer_dataset=data.transfer, **kwargs)
    else:
        trainer = Trainer(**kwargs)  # fine-tuning a teacher: the labelled data alone
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()
    return trainer


# ---- compression ----


def prune(model, data: TaskData, fraction: float, training: DistillationConfig) -> dict[int, list[int]]:
    """Remove `fraction` of the heads (in place), scored as `training` says; returns {layer: [removed heads]}.

    In a distributed run the main process chooses the heads and every process removes the same ones.
    """
    try:
        from ..pruning import prune_heads, prune_to_fraction
    except ImportError as err:
        raise RecipeError(f"Head pruning is not available in this installation ({err}).") from err
    scoring = training.scoring(while_training=False)
    return _prune_on_main(model, data, training, prune_to_fraction, prune_heads, fraction=fraction, **scoring)


def prune_neurons(model, data: TaskData, fraction: float, training: DistillationConfig) -> dict[int, list[int]]:
    """Remove `fraction` of the FFN neurons (in place), scored with the heads' method and batches (`training`);
    returns {layer: [removed neurons]}. A layer may lose its whole FFN (as when pruning while training)."""
    try:
        from ..pruning import prune_ffn, prune_ffn_to_fraction
    except ImportError as err:
        raise RecipeError(f"FFN pruning is not available in this installation ({err}).") from err
    scoring = training.scoring(while_training=False)
    return _prune_on_main(model, data, training, prune_ffn_to_fraction, prune_ffn, fraction=fraction,
                          method=scoring["method"], num_batches=scoring["num_batches"])


def _prune_on_main(model, data: TaskData, training: DistillationConfig, to_fraction, remove, **kwargs
                   ) -> dict[int, list[int]]:
    """`to_fraction(model, loader, **kwargs)` (score, choose, remove) on the main process, with shuffled training
    batches for 'taylor' (None for 'magnitude'); in a distributed run the other processes then `remove(model,
    chosen)` the same units. Returns {layer: [removed units]}."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    removed: dict[int, list[int]] = {}
    if not distributed or torch.distributed.get_rank() == 0:
        loader = None
        if training.prune_heads_method == "taylor":
            loader = torch.utils.data.DataLoader(
                data.train, batch_size=training.per_device_train_batch_size, shuffle=True,
                collate_fn=data.collator, generator=torch.Generator().manual_seed(training.seed),
            )
        try:
            _, removed = to_fraction(model, loader, **kwargs)
        except ValueError as err:
            raise RecipeError(f"prune: {err}") from err
    if distributed:
        box = [removed]
        torch.distributed.broadcast_object_list(box, src=0)
        if torch.distributed.get_rank() != 0:
            removed = box[0]
            remove(model, removed)
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
