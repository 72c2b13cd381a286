"""Child process for the crash-and-resume test: trains a tiny distillation run, optionally killing itself.

    python resume_child.py OUT_DIR [--resume] [--kill-at-step N] [--kill-during-save-at-step N] [--prune] [--cache]
                           [--transfer]

--prune: prune heads while distilling (steps 2 and 4); --cache: teacher logits from the on-disk cache;
--transfer: 24 unlabelled transfer examples beside the 40 labelled ones.
"""

import argparse
import os
import signal
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from distilkit import DistillationConfig, DistillationTrainer  # noqa: E402

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class KillAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--kill-during-save-at-step", type=int)
    parser.add_argument("--prune", action="store_true")
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--transfer", action="store_true")
    a = parser.parse_args()
    extra = {"hidden_weight": 1.0}
    if a.prune:
        extra.update(prune_heads_fraction=0.5, prune_every_steps=2, prune_num_prunes=2)
    if a.cache:
        extra.update(teacher_cache_dir=os.path.join(a.out, "teacher-cache"), hidden_weight=0.0)
    torch.set_num_threads(1)
    teacher = tiny_model("seq", seed=1, hidden=48, **NO_DROPOUT)
    student = tiny_model("seq", seed=2, **NO_DROPOUT)
    args = DistillationConfig(output_dir=a.out, per_device_train_batch_size=4, max_steps=8, learning_rate=1e-3,
                              save_strategy="steps", save_steps=2, report_to="none",
                              use_cpu=True, seed=5, logging_steps=1, disable_tqdm=True, **extra)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=tiny_dataset("seq", 40), data_collator=pad_collator,
                                  transfer_dataset=tiny_dataset("seq", 24, seed=9).remove_columns("labels")
                                  if a.transfer else None,
                                  callbacks=[KillAt(a.kill_at_step)] if a.kill_at_step else None)
    if a.kill_during_save_at_step:
        # Die after the model and optimizer are written but before the save finished.
        original = trainer._save_rng_state

        def dying_save(output_dir):
            if trainer.state.global_step == a.kill_during_save_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(output_dir)

        trainer._save_rng_state = dying_save
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    state = {f"student.{k}": v for k, v in student.state_dict().items()}
    state.update({f"projection.{k}": v for k, v in trainer.projections.state_dict().items()})
    if a.prune:
        from distilkit.pruning import kept_heads

        state["kept_heads"] = torch.tensor([[int(h in layer) for h in range(4)] for layer in kept_heads(student)])
    torch.save(state, os.path.join(a.out, "final_state.pt"))


if __name__ == "__main__":
    main()
