"""The recipe schema: one dataclass per recipe section; the training section is `DistillationConfig` itself.

A recipe file is YAML with these sections (all optional):

    model:      ModelArguments       teacher, student, how to build the student
    data:       DataArguments        a Hub dataset or local files, columns, max_length
    training:   DistillationConfig   every TrainingArguments field plus temperature, alpha, ..., and the
                                     head-pruning settings (distilkit.pruning.PruningArguments)
    prune:      PruneArguments       optional attention-head pruning step (scored per the training section)
    quantize:   QuantizeArguments    optional int8 step
    evaluation: EvalArguments        metrics and the latency measurement
    push:       PushArguments        what `distilkit push` uploads
    quickstart: QuickstartArguments  the teacher fine-tuning of `distilkit quickstart`
    augment:    AugmentFileArguments data augmentation (distilkit.augment) and the files of `distilkit augment`
    compress:   CompressArguments    the target of `distilkit compress` (distilkit.compress.CompressArguments)
    export:     ExportArguments      what `distilkit export` writes for ONNX Runtime (distilkit.export.to_onnx)

Every field is also a command-line flag of the same name (`--temperature 4`), which overrides the file. Field
names are unique across sections, so a flag never needs its section. A field may also answer to another name,
listed under "aliases" in its metadata (prune_method is prune_heads_method), in the file as on the command line.
The defaults and help texts below are the only copy: `--help` and the error messages read them from here.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ..augment import AugmentArguments
from ..compress.target import CompressArguments
from ..config import DistillationConfig
from ..export.folder import DEFAULT_OPSET, OPSETS
from ..pruning.arguments import check_fraction

class RecipeError(ValueError):
    """A mistake in a recipe, on the command line, or in the data it names: shown without a traceback."""


TASKS = ("sequence-classification", "causal-lm")
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".txt")


def parse_layer_list(value) -> int | list[int] | None:
    """`student_layers` as given (6, "6", [0, 2, 4], "0,2,4") -> an int (how many) or a list of indices."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        text = str(value).strip().strip("[]")
        items = [part for part in text.replace(" ", ",").split(",") if part]
        if len(items) == 1:
            try:
                return int(items[0])
            except ValueError:
                pass
    try:
        return [int(item) for item in items]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"student_layers={value!r} is not understood: give a number of layers (6) or layer indices ('0,2,4')."
        ) from err


@dataclass
class ModelArguments:
    """Which models to use. Each is a local folder or a Hub id (a Hub id needs network access)."""

    teacher: str | None = field(
        default=None,
        metadata={
            "help": "The teacher: a folder or Hub id. `distill` distils from it (it should already be fine-tuned on "
            "the task); `train` fine-tunes it (a pretrained model) and saves the result to output_dir."
        },
    )
    student: str | None = field(
        default=None,
        metadata={
            "help": "The student: a folder or Hub id. `distill` starts from it (default: a copy of the teacher that "
            "keeps student_layers layers); `prune`, `quantize` and `evaluate` work on it."
        },
    )
    student_layers: str | None = field(
        default=None,
        metadata={
            "help": "Build the student from the teacher by keeping its layers: a number (6 of 12 keeps every 2nd "
            "layer, 0, 2, ..., 10, as DistilBERT) or comma-separated layer indices ('0,2,4'). Used when student "
            "is not set."
        },
    )
    task: Literal["sequence-classification", "causal-lm"] = field(
        default="sequence-classification",
        metadata={"help": "The model head: sequence-classification (labels) or causal-lm (next-token prediction)."},
    )
    num_labels: int | None = field(
        default=None,
        metadata={
            "help": "Number of classes of a classifier. Default: the model's own, or for a model without a task "
            "head, one more than the largest label in the training data."
        },
    )
    tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer folder or Hub id. Default: the student's (the teacher's when the student is built "
            "from it, or for `train`)."
        },
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "Attention implementation ('eager', 'sdpa'). Default: 'eager' when attention_weight > 0 (only "
            "eager attention returns attention maps), otherwise the model's default."
        },
    )

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}.")
        layers = parse_layer_list(self.student_layers)
        if isinstance(layers, int) and layers < 1:
            raise ValueError(f"student_layers must keep at least one layer, got {layers}.")
        # Stored in one canonical text form, so the field has one type whatever the recipe wrote.
        self.student_layers = None if layers is None else (
            str(layers) if isinstance(layers, int) else ",".join(map(str, layers))
        )
        if self.num_labels is not None and self.num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {self.num_labels}.")

    @property
    def keep_layers(self) -> int | list[int] | None:
        """`student_layers` for `distilkit.student_from_teacher`: how many layers, or which."""
        return parse_layer_list(self.student_layers)


@dataclass
class DataArguments:
    """Where the data comes from and how it is tokenised (with the student's tokenizer, padded per batch)."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "A dataset on the Hugging Face Hub ('glue', 'stanfordnlp/sst2') or a local dataset folder. "
            "Without Hub access use train_file and validation_file instead."
        },
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "The dataset's configuration (subset), e.g. 'sst2' or 'mrpc' for 'glue'."}
    )
    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Local training data, instead of dataset: a .csv, .tsv, .json, .jsonl or .parquet file, or .txt "
            "(one text per line, column 'text')."
        },
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Local validation data, same formats as train_file."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of `dataset` to train on."})
    validation_split: str | None = field(
        default="validation",
        metadata={"help": "Split of `dataset` to evaluate on (e.g. 'validation_matched' for MNLI); none to skip."},
    )
    text_column: str = field(default="text", metadata={"help": "Column with the text (the first text of a pair)."})
    text_pair_column: str | None = field(
        default=None, metadata={"help": "Column with the second text of sentence pairs (MRPC, QQP, NLI)."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Column with the labels: integers 0..n-1, or names (sorted names become 0..n-1)."},
    )
    max_length: int = field(default=128, metadata={"help": "Truncate tokenised examples to this many tokens."})
    transfer_file: str | None = field(
        default=None,
        metadata={
            "help": "Unlabelled in-domain text for distillation (Hinton's transfer set): a local file in the formats "
            "of train_file, without a label column. The teacher labels it; the student learns from the teacher terms "
            "on it (sequence classification). Mixed with the training data in one shuffled stream."
        },
    )
    transfer_dataset: str | None = field(
        default=None, metadata={"help": "Unlabelled text from a Hub dataset (or local dataset folder), instead of "
                                        "transfer_file; one with a label column needs transfer_ignore_labels."}
    )
    transfer_dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration of transfer_dataset, e.g. 'sst2' for 'glue'."}
    )
    transfer_split: str = field(default="train", metadata={"help": "Split of transfer_dataset to read."})
    transfer_text_column: str | None = field(
        default=None, metadata={"help": "Text column of the transfer data. Default: text_column."}
    )
    transfer_text_pair_column: str | None = field(
        default=None, metadata={"help": "Second text column of the transfer data (pairs). Default: text_pair_column."}
    )
    transfer_ignore_labels: bool = field(
        default=False,
        metadata={"help": "The transfer data has a label column (e.g. a labelled set used as plain text): use its "
                          "text and never read the labels. Without it such a column is an error."},
    )
    max_transfer_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many transfer examples (a seeded random subset)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many training examples (a seeded random subset)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many validation examples (a seeded random subset)."}
    )

    def __post_init__(self):
        # An empty value unsets a field, so `--dataset ""` switches a recipe from the Hub to local files.
        for name in ("dataset", "dataset_config", "train_file", "validation_file", "text_pair_column", "transfer_file",
                     "transfer_dataset", "transfer_dataset_config", "transfer_text_column",
                     "transfer_text_pair_column"):
            if getattr(self, name) == "":
                setattr(self, name, None)
        if isinstance(self.validation_split, str) and self.validation_split.lower() in ("", "none", "null"):
            self.validation_split = None
        if self.dataset and self.train_file:
            raise ValueError(
                f"Give either dataset (a Hub dataset, here {self.dataset!r}) or train_file (local files, here "
                f"{self.train_file!r}), not both."
            )
        if self.transfer_file and self.transfer_dataset:
            raise ValueError(
                f"Give either transfer_file ({self.transfer_file!r}) or transfer_dataset ({self.transfer_dataset!r}), "
                "not both."
            )
        for name in ("train_file", "validation_file", "transfer_file"):
            path = getattr(self, name)
            if path is None:
                continue
            # Checked here, so a wrong path fails when the recipe is read, before any model is loaded.
            if not Path(path).is_file():
                raise ValueError(
                    f"{name} {path!r} does not exist (resolved to {Path(path).resolve()}; relative paths are read "
                    f"from the current directory {Path.cwd()})."
                )
            if Path(path).suffix.lower() not in DATA_SUFFIXES:
                raise ValueError(f"{name} {path!r}: use a {', '.join(DATA_SUFFIXES)} file.")
        if self.max_length < 2:
            raise ValueError(f"max_length must be at least 2, got {self.max_length}.")
        for name in ("max_train_samples", "max_eval_samples", "max_transfer_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")

    @property
    def has_source(self) -> bool:
        return bool(self.dataset or self.train_file)

    @property
    def has_transfer(self) -> bool:
        return bool(self.transfer_file or self.transfer_dataset)


@dataclass
class PruneArguments:
    """The prune step: remove a share of the attention heads at once, structurally (the model gets smaller).

    Heads are scored and chosen as the training section says (prune_heads_method, prune_batches,
    prune_min_heads_per_layer: distilkit.pruning.PruningArguments, shared with pruning while training).
    `distilkit prune` also removes the training section's prune_ffn_fraction of the FFN neurons.
    """

    prune_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Share of all attention heads to remove, ranked by importance across layers (0.25 removes a "
            "quarter). 0 skips the pruning step of `distill`. Scored with the training section's "
            "prune_heads_method (--prune_method), prune_batches and prune_min_heads_per_layer."
        },
    )
    prune_recovery_epochs: float = field(
        default=0.0,
        metadata={
            "help": "After pruning, distil from the teacher again for this many epochs so the remaining heads "
            "recover (needs model.teacher). 0 keeps the one-shot pruned model."
        },
    )

    def __post_init__(self):
        check_fraction("prune_fraction", self.prune_fraction)
        if self.prune_recovery_epochs < 0:
            raise ValueError(f"prune_recovery_epochs must be >= 0, got {self.prune_recovery_epochs}.")


@dataclass
class QuantizeArguments:
    """Dynamic int8 quantization: int8 weights, activations quantized at run time; the task head stays float."""

    quantize: bool = field(
        default=False,
        metadata={
            "help": "Add an int8 step after distillation (and pruning) in `distill`. The `quantize` command always "
            "quantizes."
        },
    )
    quantize_embeddings: bool = field(
        default=False,
        metadata={"help": "Also store the embeddings as int8 (smaller on disk; no speed-up)."},
    )
    quantize_skip: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module-name patterns to keep in float, fnmatch style on dotted names, e.g. "
            "'*.attention.output.dense'."
        },
    )

    def __post_init__(self):
        if isinstance(self.quantize_skip, str):  # a recipe may give a single pattern
            self.quantize_skip = [self.quantize_skip]


@dataclass
class EvalArguments:
    """What each stage is measured on: task metrics on the validation data, size, and CPU latency."""

    metrics: list[str] | None = field(
        default=None,
        metadata={
            "help": "Metrics of classifiers: names shipped with distilkit (accuracy, f1, matthews_correlation, "
            "pearsonr, spearmanr), paths to `evaluate` metric scripts, or Hub metric ids. Default: accuracy, plus "
            "f1 for two classes. Causal LMs report perplexity."
        },
    )
    eval_models: list[str] | None = field(
        default=None,
        metadata={"help": "Folders or Hub ids that `evaluate` compares, in order. Default: the student."},
    )
    latency: bool = field(
        default=True, metadata={"help": "Measure CPU latency (median of 10 forward passes on random tokens)."}
    )
    latency_batch_size: int = field(default=8, metadata={"help": "Batch size of the latency measurement."})
    latency_seq_len: int = field(default=128, metadata={"help": "Sequence length of the latency measurement."})
    latency_threads: int = field(default=2, metadata={"help": "CPU threads of the latency measurement."})
    engine: str = field(
        default="torch",
        metadata={"help": "The inference engine latency is measured in, the one you deploy on: torch, or "
                  "onnxruntime (each model exported to ONNX and run by ONNX Runtime; needs distilkit[onnx]). "
                  "compress plans for it and exports its result to onnx/."},
    )

    def __post_init__(self):
        for name in ("metrics", "eval_models"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        for name in ("latency_batch_size", "latency_seq_len", "latency_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        from ..engines import check_engine

        check_engine(self.engine)


@dataclass
class PushArguments:
    """Upload a folder to the Hub. The repo id and privacy are the training fields hub_model_id, hub_private_repo."""

    push_folder: str | None = field(
        default=None, metadata={"help": "Folder to upload. Default: output_dir."}
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Check the folder and show what would be uploaded, without uploading."}
    )


@dataclass
class ExportArguments:
    """Export a model folder to ONNX Runtime: model.onnx, config.json and the tokenizer, in output_dir."""

    export_folder: str | None = field(
        default=None,
        metadata={"help": "The model folder to export (plain, pruned or int8, as distilkit saves it); also the "
                          "first argument: `distilkit export FOLDER --output_dir OUT`."},
    )
    export_int8: bool = field(
        default=False,
        metadata={
            "help": "Quantize the graph with ONNX Runtime's dynamic int8 (onnxruntime.quantization.quantize_dynamic, "
            "int8 weights). Without it a folder quantized by distilkit still exports its int8 weights as they are.",
            "aliases": ["--int8"],
        },
    )
    export_opset: int = field(
        default=DEFAULT_OPSET,
        metadata={"help": f"ONNX opset, {OPSETS.start} to {OPSETS.stop - 1}.", "aliases": ["--opset"]},
    )

    def __post_init__(self):
        if self.export_opset not in OPSETS:
            raise ValueError(f"export_opset must be one of {OPSETS.start}..{OPSETS.stop - 1}, got {self.export_opset}.")


@dataclass
class QuickstartArguments:
    """`distilkit quickstart` first fine-tunes the teacher; the training section then drives the distillation."""

    teacher_epochs: float = field(default=3.0, metadata={"help": "Epochs of teacher fine-tuning."})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of teacher fine-tuning."})

    def __post_init__(self):
        if self.teacher_epochs <= 0 or self.teacher_learning_rate <= 0:
            raise ValueError("teacher_epochs and teacher_learning_rate must be > 0.")


@dataclass
class AugmentFileArguments(AugmentArguments):
    """Data augmentation (distilkit.augment.AugmentArguments) and the files `distilkit augment` reads and writes."""

    augment_input: str | None = field(
        default=None,
        metadata={"help": "File to augment: a .csv, .tsv, .json, .jsonl, .parquet or .txt file. Default: train_file."},
    )
    augment_output: str | None = field(
        default=None,
        metadata={
            "help": "File `distilkit augment` writes the augmented copies to, in the format of its suffix (.csv, "
            ".tsv, .json and .jsonl as JSON lines, .parquet, .txt for a single text column without labels)."
        },
    )
    augment_train: bool = field(
        default=False,
        metadata={
            "help": "`distill`: add num_copies augmented copies of every training example to the transfer data "
            "(unlabelled: the teacher labels them; TinyBERT's augmentation). Replacement words come from the "
            "teacher's input embeddings, or its masked-LM head / a fill-mask model with augment_mlm."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.augment_input and not Path(self.augment_input).is_file():
            raise ValueError(f"augment_input {self.augment_input!r} does not exist (resolved to "
                             f"{Path(self.augment_input).resolve()}).")
        for name in ("augment_input", "augment_output"):
            path = getattr(self, name)
            if path and Path(path).suffix.lower() not in DATA_SUFFIXES:
                raise ValueError(f"{name} {path!r}: use a {', '.join(DATA_SUFFIXES)} file.")


# Section name in a recipe file -> its dataclass. The order is the order of --help.
SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "training": DistillationConfig,
    "prune": PruneArguments,
    "quantize": QuantizeArguments,
    "evaluation": EvalArguments,
    "push": PushArguments,
    "export": ExportArguments,
    "quickstart": QuickstartArguments,
    "augment": AugmentFileArguments,
    "compress": CompressArguments,
}


@dataclass
class Recipe:
    """A parsed recipe: one instance per section the command uses (None for the others)."""

    command: str
    config_path: str | None = None
    model: ModelArguments | None = None
    data: DataArguments | None = None
    training: DistillationConfig | None = None
    prune: PruneArguments | None = None
    quantize: QuantizeArguments | None = None
    evaluation: EvalArguments | None = None
    push: PushArguments | None = None
    export: ExportArguments | None = None
    quickstart: QuickstartArguments | None = None
    augment: AugmentFileArguments | None = None
    compress: CompressArguments | None = None
    # The recipe as given (file values merged with command-line overrides), per section; saved beside outputs.
    values: dict = field(default_factory=dict)


# The sections each command reads, in the order of its --help: the one table the command line and
# `load_recipe` (Python) share.
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("model", "data", "training", "evaluation"),
    "distill": ("model", "data", "training", "prune", "quantize", "evaluation", "augment"),
    "prune": ("model", "data", "training", "prune", "evaluation"),
    "quantize": ("model", "data", "training", "quantize", "evaluation"),
    "evaluate": ("model", "data", "training", "evaluation"),
    "quickstart": ("model", "data", "training", "prune", "quantize", "evaluation", "quickstart"),
    "compress": ("model", "data", "training", "evaluation", "compress"),
    "augment": ("model", "data", "augment"),
    "push": ("training", "push"),
    "export": ("training", "export"),
}


def section_fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section]) if f.init]


def field_sections() -> dict[str, str]:
    """Field name -> the section that owns it (names are unique across sections; a test checks it)."""
    return {name: section for section in SECTIONS for name in section_fields(section)}


def field_aliases() -> dict[str, str]:
    """Another name a field answers to -> the field's name, from the "aliases" in the fields' metadata."""
    return {alias.lstrip("-").replace("-", "_"): f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)
            for alias in f.metadata.get("aliases", ())}


def _suggestion(name: str, candidates) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close and len(name) >= 3:  # an abbreviation: "temp" -> "temperature"
        close = sorted((c for c in candidates if c.startswith(name)), key=len)[:1]
    return f" Did you mean {close[0]!r}?" if close else ""


def _listing(names) -> str:
    return textwrap.fill(", ".join(names), width=110, initial_indent="    ", subsequent_indent="    ")


def unknown_field_error(name: str, where: str, sections: tuple[str, ...], section: str | None = None) -> RecipeError:
    """The error for a field that does not exist where it was given, with the closest valid name."""
    owner = field_sections().get(field_aliases().get(name, name))
    if section is not None:  # a key inside a section of a recipe file
        if owner is not None:
            return RecipeError(f"{where}: {name!r} is not a field of section {section!r}; it belongs under {owner}:.")
        valid = section_fields(section)
        return RecipeError(
            f"{where}: unknown field {name!r} in section {section!r}.{_suggestion(name, valid)}\n"
            f"Valid fields of {section!r}:\n{_listing(valid)}"
        )
    if owner is not None:  # a command-line flag of a section this command does not read
        return RecipeError(
            f"{where}: --{name} belongs to the {owner!r} section, which this command does not use (it reads "
            f"{', '.join(sections)})."
        )
    valid = [n for s in sections for n in section_fields(s)]
    listing = "\n".join(f"  {s}:\n{_listing(section_fields(s))}" for s in sections)
    return RecipeError(
        f"{where}: unknown field {name!r}.{_suggestion(name, valid)}\nValid fields, by recipe section:\n{listing}"
    )


def read_recipe_file(path: str | os.PathLike) -> dict[str, dict]:
    """The sections of a recipe file, every key checked against the schema (not only the sections a command uses)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must be a mapping of sections ({', '.join(SECTIONS)}), not {type(data).__name__}.")
    owners = field_sections()
    aliases = field_aliases()
    recipe: dict[str, dict] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            if section in owners:
                raise RecipeError(
                    f"{path}: {section!r} is a field, not a section; put it under {owners[section]}: "
                    f"(sections: {', '.join(SECTIONS)})."
                )
            raise RecipeError(
                f"{path}: unknown section {section!r}.{_suggestion(str(section), SECTIONS)} Sections: "
                f"{', '.join(SECTIONS)}."
            )
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: section {section!r} must be a mapping of field: value.")
        valid = set(section_fields(section))
        for name in values:
            if aliases.get(name, name) not in valid:
                raise unknown_field_error(str(name), str(path), tuple(SECTIONS), section=section)
        recipe[section] = {aliases.get(name, name): value for name, value in values.items()}
        if len(recipe[section]) < len(values):
            raise RecipeError(f"{path}: section {section!r} sets a field twice, under its name and an alias "
                              f"({', '.join(f'{a} = {n}' for a, n in aliases.items() if a in values)}).")
    return recipe


def merge_recipes(base: dict[str, dict], override: dict[str, dict]) -> dict[str, dict]:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _to_plain(value):
    """A value that yaml.safe_dump can write."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


RECIPE_FILE = "distilkit_recipe.yaml"  # the recipe a run saves beside its outputs


def write_recipe(recipe: Recipe, folder: str | os.PathLike, name: str = RECIPE_FILE) -> Path:
    """Save the recipe as it was asked for beside the outputs, so a run can be repeated with --config."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `distilkit {recipe.command}`; repeat with: distilkit {recipe.command} --config {name}\n"
    path.write_text(header + yaml.safe_dump(recipe.values, sort_keys=False), encoding="utf-8")
    return path


def load_recipe(command: str, config: str | os.PathLike | dict | None = None, base: dict | None = None,
                **fields) -> Recipe:
    """The recipe of `command` from Python: `config` (a recipe file or a {section: {field: value}} dict) with
    `fields` (any field of the command's sections, by name, as on the command line) on top, over `base` (a
    command's built-in recipe), over the defaults. Every name is checked as the command line checks it.

        recipe = load_recipe("distill", "recipes/sst2.yaml", learning_rate=1e-4, output_dir="runs/sst2")
    """
    if command not in COMMAND_SECTIONS:
        close = difflib.get_close_matches(command, COMMAND_SECTIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise RecipeError(f"Unknown command {command!r}.{hint} Commands: {', '.join(COMMAND_SECTIONS)}.")
    sections = COMMAND_SECTIONS[command]
    given = read_recipe_file(config) if isinstance(config, (str, os.PathLike)) else dict(config or {})
    values = merge_recipes(base or {}, given)
    owners, aliases = field_sections(), field_aliases()
    for name, value in fields.items():
        name = aliases.get(name, name)
        if owners.get(name) not in sections:
            raise unknown_field_error(name, "load_recipe", sections)
        values.setdefault(owners[name], {})[name] = value
    recipe = Recipe(command=command, config_path=str(config) if isinstance(config, (str, os.PathLike)) else None)
    for section in sections:
        try:
            setattr(recipe, section, SECTIONS[section](**values.get(section, {})))
        except (ValueError, TypeError) as err:
            raise RecipeError(f"invalid {section} settings: {err}") from err
        if values.get(section):
            recipe.values[section] = {k: _to_plain(v) for k, v in values[section].items()}
    return recipe
