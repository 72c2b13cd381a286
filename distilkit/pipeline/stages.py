"""The one engine every command runs on: a run is a list of stages, each a model folder under output_dir.

    <output_dir>/<stage>/             one model per stage (teacher, student, pruned, int8, ...), written
                                      atomically, then marked complete: `STAGE_MARKER` holds the identity of the
                                      run that made it (settings that shape the models, input weights, data) and
                                      its fingerprint
    <output_dir>/<stage>-training/    a trained stage's checkpoints, logs and state, with the same record: beside
                                      its folder, so the folder holds the model alone and a killed training
                                      resumes from them

The rules are the same for every command:

* a stage whose marker names this run's fingerprint is complete, and skipped ("complete, skipped");
* an interrupted training resumes from its last complete checkpoint (`Run.last_checkpoint`);
* once a stage is made, every later stage is made again, since it was made from the old one;
* a stage folder (or training folder) made by a run of another identity is refused before anything is written,
  naming what changed: resuming would mix the two runs. Commands that make other stages share an output_dir
  (`train` writes teacher/, then `distill` student/, ...).

So a killed run is resumed by running the same command again. One line per stage says what happens.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..serialization.atomic import publishing_file

STAGE_MARKER = "distilkit_stage.json"
TRAINING_SUFFIX = "-training"


@dataclass(frozen=True)
class Stage:
    """One step of a run: `make(folder)` writes the stage's model into `folder` (with atomic saves, e.g.
    `distilkit.save_pretrained` or `Trainer.save_model`); `what` is the line shown while it is made.
    `collective`: every process of a distributed run makes it together (training); otherwise the main process
    alone does (int8, a save)."""

    name: str
    make: Callable[[Path], None]
    what: str = ""
    collective: bool = True


def fingerprint(identity: dict) -> str:
    """A short hash of a run's identity (a JSON-able dict)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `path` atomically: a reader never sees half of it."""
    with publishing_file(path) as staging:
        staging.write_text(text, encoding="utf-8")


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two nested dicts."""
    changed = []
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a} -> {b}")
    return changed


class Run:
    """The stages of one command in one output_dir, made or resumed by the rules of this module.

    `identity`: everything the stages are made from (settings that shape the models, input weights, data
    fingerprints), as a JSON-able dict. `main_process`: only the main process of a distributed run writes
    (markers); every process runs a collective stage's `make`, so collective work (training) stays in step.
    """

    def __init__(self, output_dir: str | os.PathLike, identity: dict, *, main_process: bool = True):
        self.output_dir = Path(output_dir)
        self.identity = json.loads(json.dumps(identity, sort_keys=True, default=str))  # as a marker stores it
        self.fingerprint = fingerprint(self.identity)
        self.main_process = main_process

    # ---- where things are ----

    def folder(self, stage: str) -> Path:
        return self.output_dir / stage

    def training_dir(self, stage: str) -> Path:
        """Where `stage` trains (checkpoints, logs): made and marked with this run's identity on first use, so a
        later run of another identity cannot resume from its checkpoints."""
        folder = self.output_dir / f"{stage}{TRAINING_SUFFIX}"
        if self.main_process and not (folder / STAGE_MARKER).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            self._mark(folder, stage)
        return folder

    def last_checkpoint(self, stage: str) -> str | None:
        """The newest complete checkpoint of `stage`'s interrupted training, or None to train from the start."""
        from ..serialization.checkpoints import last_complete_checkpoint

        try:
            return last_complete_checkpoint(str(self.training_dir(stage)))
        except ValueError:  # no (complete) checkpoint
            return None

    # ---- state ----

    def check(self, stages: Sequence[str]) -> None:
        """Refuse stage folders (and training folders) of `stages` made by a run of another identity, naming what
        changed. Writes nothing."""
        for stage in stages:
            for folder in (self.folder(stage), self.output_dir / f"{stage}{TRAINING_SUFFIX}"):
                record = _read_marker(folder)
                if record is None or record.get("fingerprint") == self.fingerprint:
                    continue
                changed = differences(record.get("identity") or {}, self.identity) or ["(an unreadable record)"]
                raise ValueError(
                    f"{folder} was made by a run of other settings or inputs ({'; '.join(changed)}); resuming would "
                    f"mix the two. Use another output_dir, or delete {folder} to make it again.")

    def complete(self, stage: str) -> bool:
        record = _read_marker(self.folder(stage))
        return record is not None and record.get("fingerprint") == self.fingerprint

    # ---- making ----

    def execute(self, stages: Sequence[Stage], say: Callable[[str], None] = print) -> list[str]:
        """Make the stages in order, skipping the complete ones up to the first that is not; returns the names of
        the stages made. Which stages are complete is decided before anything runs, so every process of a
        distributed run decides alike."""
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"Stage names must be unique, got {names}.")
        self.check(names)
        first_to_make = next((i for i, stage in enumerate(stages) if not self.complete(stage.name)), len(stages))
        made = []
        for number, stage in enumerate(stages, 1):
            folder = self.folder(stage.name)
            if number - 1 < first_to_make:
                self._say(say, number, len(stages), stage, "complete, skipped")
                continue
            if self.main_process:  # stale until made again: a kill from here on leaves it incomplete
                (folder / STAGE_MARKER).unlink(missing_ok=True)
            self._say(say, number, len(stages), stage, stage.what or "making")
            if stage.collective or self.main_process:
                stage.make(folder)
            if self.main_process:
                self._mark(folder, stage.name)
            _wait_for_every_process()  # the next stage may read this one's folder on every process
            made.append(stage.name)
        return made

    def _mark(self, folder: Path, stage: str) -> None:
        write_text(folder / STAGE_MARKER, json.dumps({"stage": stage, "fingerprint": self.fingerprint,
                                                       "identity": self.identity}, indent=1) + "\n")

    def _say(self, say, number: int, total: int, stage: Stage, text: str) -> None:
        if self.main_process:
            say(f"[{number}/{total}] {stage.name}: {text}")


def _read_marker(folder: Path) -> dict | None:
    marker = folder / STAGE_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except ValueError:
        return {}


def _wait_for_every_process() -> None:
    """A barrier across the processes of a distributed run (none in a single process)."""
    import sys

    dist = sys.modules.get("torch.distributed")  # not imported: no process group
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
