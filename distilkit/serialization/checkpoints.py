"""The DistillationTrainer's checkpoint format, on top of transformers' checkpoint folders.

A checkpoint folder also holds the distillation projections (`PROJECTIONS_FILE`, trained alongside the student
but never part of the exported model) and, written last, `COMPLETE_MARKER`. `SAVING_MARKER` is written first, before
transformers writes anything: a folder that has it but not `COMPLETE_MARKER` was interrupted while saving and is
never resumed. A folder with neither was written by plain `transformers.Trainer`, and counts as complete when it has
trainer_state.json, the file Trainer writes last (so a project can switch from Trainer to DistillationTrainer). A
student pruned while distilling (heads and/or FFN neurons) is pruned the same way before a checkpoint's weights are
loaded into it. `DistillationTrainer` calls these functions from its save and resume hooks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

from safetensors.torch import load_file, save_file
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .compressions import recorded
from .format import LOADING_CODE_FILE

# The file transformers.Trainer writes last into a checkpoint (transformers.trainer.TRAINER_STATE_NAME).
TRAINER_STATE_NAME = "trainer_state.json"

logger = logging.getLogger(__name__)

PROJECTIONS_FILE = "distillation_projections.safetensors"
# Written last into a checkpoint folder: a folder without it was interrupted while saving and is never resumed.
COMPLETE_MARKER = "distilkit_checkpoint_complete"
# Written first: the folder is a DistillationTrainer checkpoint, complete only once COMPLETE_MARKER is there too.
SAVING_MARKER = "distilkit_checkpoint_saving"


def start_checkpoint(checkpoint: str) -> None:
    """Mark a checkpoint folder as being saved by DistillationTrainer, before transformers writes into it."""
    os.makedirs(checkpoint, exist_ok=True)
    with open(os.path.join(checkpoint, SAVING_MARKER), "w") as marker:
        marker.write("saving\n")


def finish_checkpoint(checkpoint: str, projections: nn.Module, step: int) -> None:
    """Add the projections (if any) to a checkpoint transformers has written, then mark it complete."""
    if len(projections) > 0:
        state = {k: v.detach().cpu().contiguous() for k, v in projections.state_dict().items()}
        save_file(state, os.path.join(checkpoint, PROJECTIONS_FILE))
    with open(os.path.join(checkpoint, COMPLETE_MARKER), "w") as marker:
        marker.write(f"{step}\n")


def load_projections(checkpoint: str, projections: nn.Module) -> None:
    """Load a checkpoint's projections into `projections` (nothing to do when there are none)."""
    if len(projections) == 0:
        return
    path = os.path.join(checkpoint, PROJECTIONS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{checkpoint} has no {PROJECTIONS_FILE}: it was not written by a run with the same "
            "hidden-state projections (hidden_weight > 0 and different widths)."
        )
    projections.load_state_dict(load_file(path, device=str(next(projections.parameters()).device)))


def is_complete(checkpoint: str) -> bool:
    """Whether a checkpoint's save finished: distilkit's completion marker is there, or the folder was written by
    plain `transformers.Trainer` (no distilkit marker at all) and has trainer_state.json, Trainer's last file."""
    def has(name):
        return os.path.isfile(os.path.join(checkpoint, name))

    if has(COMPLETE_MARKER):
        return True
    return not has(SAVING_MARKER) and has(TRAINER_STATE_NAME)


def check_complete(checkpoint: str) -> None:
    if os.path.isdir(checkpoint) and not is_complete(checkpoint):
        raise ValueError(
            f"{checkpoint} is incomplete (no {COMPLETE_MARKER} or {TRAINER_STATE_NAME}): the run was stopped while "
            "saving it. Resume from an earlier checkpoint, or pass resume_from_checkpoint=True to pick the last "
            "complete one."
        )


def last_complete_checkpoint(output_dir: str) -> str:
    """The newest checkpoint folder in `output_dir` whose save finished; interrupted saves are skipped.

    Raises transformers.Trainer's own error (same words) when there is none."""
    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    candidates = sorted(
        (int(m.group(1)), name) for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
        if (m := pattern.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for step, name in reversed(candidates):
        path = os.path.join(output_dir, name)
        if is_complete(path):
            return path
        logger.warning("Skipping %s: its save did not finish (no %s or %s).", path, COMPLETE_MARKER,
                       TRAINER_STATE_NAME)
    raise ValueError(f"No valid checkpoint found in output directory ({output_dir})")


def match_checkpoint_structure(model: nn.Module, checkpoint: str) -> None:
    """Give `model` the structure of `checkpoint`'s student before its weights are loaded (the heads and FFN
    neurons pruning while distilling had removed by then), through each recorded compression's `match` function
    (`compressions.COMPRESSIONS`), so a run resumes with the checkpoint's structure; the optimizer is built
    afterwards, on the pruned model."""
    config_path = os.path.join(checkpoint, "config.json")
    if not os.path.isfile(config_path):
        return
    with open(config_path) as handle:
        record = json.load(handle).get("distilkit") or {}
    for compression in recorded(record):
        match = compression.match_function()
        if match is None:
            continue
        try:
            match(model, record[compression.key])
        except ValueError as err:
            raise ValueError(f"{checkpoint}: {err}; resume with the student the run started with.") from err


def copy_loading_code(checkpoint: str, output_dir: str) -> None:
    """Make `output_dir`'s loading code that of `checkpoint` (transformers copies only config and weights from a
    checkpoint into output_dir before pushing it; config.json's auto_map names these files)."""
    wanted = {name for name in os.listdir(checkpoint) if LOADING_CODE_FILE.match(name)}
    for name in os.listdir(output_dir):
        if LOADING_CODE_FILE.match(name) and name not in wanted:
            os.remove(os.path.join(output_dir, name))
    for name in wanted:
        shutil.copy(os.path.join(checkpoint, name), os.path.join(output_dir, name))
