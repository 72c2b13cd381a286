"""DistillationTrainer: `transformers.Trainer` that also learns from a frozen teacher."""

from __future__ import annotations

import inspect
import logging
import os
from collections import defaultdict

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import loss_terms, teacher_cache
from .config import DistillationConfig, uniform_layer_map
from .data import TEACHER_INPUT_COLUMNS, pop_teacher_inputs
from .distributed import prepare_teacher_deepspeed, shard_teacher_fsdp
from .loss_terms import ATTENTIONS, HIDDEN_STATES, TeacherOutputs
from .model_card import TrainingRun, save_card, trainer_model_card
from .serialization import checkpoints
from .serialization.save import save_staged
from .tasks import Task, count_label_items, output_size, task_of
from .transfer import NO_LABEL, check_transfer, label_column, with_transfer

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DistillationTrainer(Trainer):
    """A drop-in replacement for `transformers.Trainer` that distils `teacher_model` into `model`.

    Pass a `DistillationConfig` as `args`; everything else (datasets, collators, callbacks, logging,
    checkpoints, `accelerate launch`) works as with `Trainer`. The loss is

        (1 - alpha) * hard + alpha * soft_label_loss + hidden_weight * sum(hidden) + attention_weight * sum(attn)

    and each part is logged as loss_ce, loss_kd, loss_hidden, loss_attn (the terms are the table
    `distilkit.loss_terms.LOSS_TERMS`). The teacher is frozen, kept in eval
    mode, run under `torch.inference_mode`, and never saved. Evaluation reports the student's own (hard-label)
    loss as eval_loss, so it compares directly with a run of plain `Trainer`.
    """

    def __init__(self, model: PreTrainedModel | nn.Module | None = None, args: DistillationConfig | None = None,
                 *trainer_args, teacher_model: nn.Module | None = None, transfer_dataset=None, **trainer_kwargs):
        # Positional arguments keep Trainer's order (model, args, data_collator, train_dataset, ...);
        # the teacher and the transfer data (unlabelled examples, see distilkit.transfer) are keyword-only.
        if args is None:  # as Trainer(model): default arguments
            args = DistillationConfig(output_dir="trainer_output")
        if not isinstance(args, DistillationConfig):
            raise TypeError(
                f"args must be a distilkit.DistillationConfig (got {type(args).__name__}); it accepts every "
                "TrainingArguments field plus temperature, alpha, hidden_weight, attention_weight, ..."
            )
        if teacher_model is None and args.distillation_settings:
            given = ", ".join(f"{name}={value}" for name, value in args.distillation_settings.items())
            raise ValueError(
                f"The distillation setting{'s' if ',' in given else ''} {given} need{'' if ',' in given else 's'} a "
                "teacher: pass teacher_model=, or leave alpha unset (or 0) and hidden_weight / attention_weight at 0 "
                "to train exactly as transformers.Trainer."
            )
        # An unset alpha weighs the soft labels DEFAULT_ALPHA when there is a teacher (loss_terms.soft_label_weight);
        # without one no teacher term exists. `args` stays as given, as Trainer leaves its arguments untouched.
        if teacher_model is None:
            logger.info("No teacher_model: DistillationTrainer trains exactly as transformers.Trainer.")
        self.teacher = teacher_model if args.uses_teacher else None
        self.task: Task | None = None
        self.layer_map: dict[int, int] = {}
        if self.teacher is not None and model is not None:
            self.task = task_of(model)
            self._check_compatible(model, self.teacher, args)
            self.layer_map = self._resolve_layer_map(model, self.teacher, args)
        train_dataset = trainer_kwargs.get("train_dataset", trainer_args[1] if len(trainer_args) > 1 else None)
        _check_labels(model, train_dataset)
        self.has_transfer = transfer_dataset is not None
        self.transfer_examples = 0
        if self.has_transfer:
            num_labels = getattr(getattr(model, "config", None), "num_labels", None)
            columns = model_input_columns(model, args)
            check_transfer(transfer_dataset, train_dataset, self.task, num_labels, args, columns)
            self.transfer_examples = len(transfer_dataset)
            train_dataset = with_transfer(train_dataset, transfer_dataset, columns)
            if "train_dataset" in trainer_kwargs:
                trainer_kwargs["train_dataset"] = train_dataset
            else:
                trainer_args = (trainer_args[0], train_dataset, *trainer_args[2:])
        super().__init__(model, args, *trainer_args, **trainer_kwargs)
        if args.prune_heads_fraction > 0 or args.prune_ffn_fraction > 0:
            from .pruning import PruningCallback

            self.add_callback(PruningCallback(
                target_fraction=args.prune_heads_fraction, prune_every_steps=args.prune_every_steps,
                num_prunes=args.prune_num_prunes, seed=args.seed, ffn_target_fraction=args.prune_ffn_fraction,
                **args.scoring(while_training=True),
            ))

        self.projections = nn.ModuleDict()
        self._teacher_cache_pending = False
        self._metrics: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.nonfinite_batches_skipped = 0
        if self.teacher is not None:
            self._prepare_teacher()
            if loss_terms.layer_terms(args):
                self._probe_outputs(self.model, self.teacher)
            if HIDDEN_STATES in loss_terms.outputs_needed(args, "student"):
                self._build_projections()
            if TEACHER_INPUT_COLUMNS[0] in (getattr(self.train_dataset, "column_names", None) or ()):
                self._check_own_tokenizer_terms()
            # The cache is built when the training data is first loaded (`get_train_dataloader`), not here: building
            # a trainer stays cheap, as with Trainer. Its set-up is checked now.
            self._teacher_cache_pending = bool(args.teacher_cache_dir) and any(
                t.cacheable for t in loss_terms.teacher_terms(args))
            if self._teacher_cache_pending:
                self._check_teacher_cache()

    # ---- set-up checks: everything that can be wrong fails here, before the first step ----

    def _check_own_tokenizer_terms(self) -> None:
        """A teacher with its own tokenizer (`teacher_` inputs) reads other positions than the student: only
        sequence-level logits can be compared."""
        if self.task.token_level:
            raise ValueError(
                "The data has separate teacher inputs (teacher_input_ids): a teacher with its own tokenizer only "
                f"works for sequence-level tasks, not {self.task.value}, where positions must line up."
            )
        layered = [t.weight_field for t in loss_terms.layer_terms(self.args)]
        if layered:
            raise ValueError(
                f"The data has separate teacher inputs (teacher_input_ids), but {' and '.join(layered)} compare "
                "hidden states or attention maps position by position, which only line up when student and teacher "
                f"share a tokenizer. Set {' and '.join(layered)} to 0, or use a student with the teacher's tokenizer."
            )

    @staticmethod
    def _check_compatible(student: nn.Module, teacher: nn.Module, args: DistillationConfig) -> None:
        student_task, teacher_task = task_of(student), task_of(teacher)
        if loss_terms.soft_label_weight(args) > 0:
            if student_task is not teacher_task:
                raise ValueError(
                    f"Logit distillation needs the same kind of head: student is {type(student).__name__} "
                    f"({student_task.value}), teacher is {type(teacher).__name__} ({teacher_task.value})."
                )
            s_size, t_size = output_size(student, student_task), output_size(teacher, teacher_task)
            if s_size != t_size:
                what = "vocabulary size" if student_task.predicts_vocabulary else "num_labels"
                raise ValueError(
                    f"Logit distillation needs the same {what}: student has {s_size}, teacher has {t_size}. "
                    + ("Use models with the same tokenizer/vocabulary." if student_task.predicts_vocabulary
                       else "Build the student with num_labels equal to the teacher's.")
                )
        if args.attention_weight > 0:
            for role, model in (("student", student), ("teacher", teacher)):
                implementation = getattr(model.config, "_attn_implementation", None)
                if implementation != "eager":
                    raise ValueError(
                        f"attention_weight={args.attention_weight} needs attention probabilities, which only eager "
                        f"attention returns; the {role} uses {implementation!r}. Call "
                        f"model.set_attn_implementation('eager') or load it with attn_implementation='eager'."
                    )

    @staticmethod
    def _resolve_layer_map(student: nn.Module, teacher: nn.Module, args: DistillationConfig) -> dict[int, int]:
        if not loss_terms.layer_terms(args):
            return {}
        s_layers, t_layers = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        if args.layer_map == "uniform":
            return uniform_layer_map(s_layers, t_layers)
        bad = {s: t for s, t in args.layer_map.items() if s > s_layers or t > t_layers}
        if bad:
            raise ValueError(
                f"layer_map entries {bad} are out of range: student hidden states are 0..{s_layers}, teacher "
                f"hidden states 0..{t_layers} (0 is the embedding output)."
            )
        return dict(args.layer_map)

    def _probe_outputs(self, student: nn.Module, teacher: nn.Module) -> None:
        """Run both models once on two tokens to check they return the hidden states / attentions needed."""
        for role, model in (("student", student), ("teacher", teacher)):
            needed = loss_terms.outputs_needed(self.args, role)
            want_hidden, want_attention = HIDDEN_STATES in needed, ATTENTIONS in needed
            device = next(model.parameters()).device
            was_training = model.training
            model.eval()
            with torch.no_grad():
                out = model(
                    input_ids=torch.tensor([[1, 2]], device=device),
                    output_hidden_states=want_hidden,
                    output_attentions=want_attention,
                )
            model.train(was_training)
            layers = model.config.num_hidden_layers
            if want_hidden and (getattr(out, "hidden_states", None) is None or len(out.hidden_states) != layers + 1):
                raise ValueError(
                    f"hidden_weight={self.args.hidden_weight} needs hidden states, but the {role} "
                    f"({type(model).__name__}) does not return one per layer plus the embeddings with "
                    "output_hidden_states=True. Set hidden_weight=0 for this model."
                )
            if want_attention and (getattr(out, "attentions", None) is None or len(out.attentions) != layers
                                   or any(a is None for a in out.attentions)):
                raise ValueError(
                    f"attention_weight={self.args.attention_weight} needs attention maps, but the {role} "
                    f"({type(model).__name__}) returns none with output_attentions=True. Use eager attention "
                    "(model.set_attn_implementation('eager')) or set attention_weight=0."
                )

    def _prepare_teacher(self) -> None:
        teacher = self.teacher
        teacher.eval()
        teacher.requires_grad_(False)
        dtype = _DTYPES[self.args.teacher_dtype] if self.args.teacher_dtype else None
        if self.is_deepspeed_enabled:
            self.teacher = prepare_teacher_deepspeed(teacher.to(dtype=dtype), self.accelerator)
            return
        teacher.to(device=self.args.device, dtype=dtype)
        if self.is_fsdp_enabled:  # shard it like the student instead of a full copy per process
            self.teacher = shard_teacher_fsdp(teacher, device_type=self.args.device.type)

    def _build_projections(self) -> None:
        """A learned linear map per matched layer when the student is narrower than the teacher."""
        s_width, t_width = self.model.config.hidden_size, self.teacher.config.hidden_size
        if s_width == t_width:
            return
        device = next(self.model.parameters()).device
        for s_index in self.layer_map:
            self.projections[str(s_index)] = nn.Linear(s_width, t_width).to(device)

    def _check_teacher_cache(self) -> None:
        if self.train_dataset is None:
            raise ValueError("teacher_cache_dir needs a train_dataset to cache teacher outputs for.")
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(
                "teacher_cache_dir is built by the main process alone, which a teacher sharded by FSDP/DeepSpeed "
                "cannot do. Build the cache once in a single process (same data and teacher), then launch."
            )
        teacher_cache.dataset_fingerprint(self.train_dataset)

    def _attach_teacher_cache(self) -> None:
        """Add cached teacher outputs to the training data (building them once) and collate them with it."""
        self._teacher_cache_pending = False
        top_k = self.args.teacher_cache_top_k
        if top_k is None and self.task.predicts_vocabulary:
            top_k = 32
        self._set_signature_columns_if_needed()
        # The teacher pass collates what training will: the columns the model's forward accepts (Trainer's
        # remove_unused_columns), or every column when that is off.
        columns = self._signature_columns if self.args.remove_unused_columns else None
        self.train_dataset = teacher_cache.load_or_build(
            self.train_dataset, self.teacher, self.data_collator, self.args.teacher_cache_dir, self.task, top_k,
            self.args.temperature, self.args.per_device_eval_batch_size, self.args.device, self.args,
            input_columns=columns,
        )
        self.data_collator = teacher_cache.CachedTeacherCollator(self.data_collator, self.task.token_level)

    def get_train_dataloader(self):
        if self._teacher_cache_pending:
            self._attach_teacher_cache()
        return super().get_train_dataloader()

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        # Keep the cached teacher columns through `remove_unused_columns`; compute_loss takes them out again.
        self._signature_columns += [c for c in DISTILLATION_COLUMNS if c not in self._signature_columns]

    # ---- optimisation: projections train with the student ----

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh and len(self.projections) > 0:
            optimizer.add_param_group(
                {"params": list(self.projections.parameters()), "weight_decay": self.args.weight_decay}
            )
            # The Trainer syncs and zeroes only the model's gradients; the projections get the same treatment
            # around every real optimizer step (not every micro-batch, so gradient accumulation still works).
            optimizer.register_step_pre_hook(lambda *_: self._sync_projection_gradients())
            optimizer.register_step_post_hook(lambda *_: self.projections.zero_grad(set_to_none=True))
        return optimizer

    def _sync_projection_gradients(self) -> None:
        """Average the projections' gradients across processes, as DDP does for the student's."""
        world = self.accelerator.num_processes
        if world == 1:
            return
        for param in self.projections.parameters():
            if param.grad is not None:
                torch.distributed.all_reduce(param.grad, op=torch.distributed.ReduceOp.SUM)
                param.grad /= world

    # ---- the loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = self._compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        # The non-finite policy guards the distillation terms; without a teacher the loss is Trainer's own, and so
        # is what happens to a NaN (logged, filtered by logging_nan_inf_filter).
        if self.teacher is not None and model.training and not torch.isfinite(loss.detach()).all():
            step = self.state.global_step + 1
            if self.args.nonfinite_loss == "error":
                raise FloatingPointError(
                    f"The training loss is {loss.item()} at step {step} (epoch {self.state.epoch}). Lower the "
                    "learning rate, check the data of this step, or set nonfinite_loss='skip' to drop such batches."
                )
            self.nonfinite_batches_skipped += 1
            logger.warning("Non-finite loss at step %d: batch skipped (%d so far).", step,
                           self.nonfinite_batches_skipped)
            # A zero that reaches every trainable parameter: the backward (and DDP's all-reduce) still runs,
            # and adds nothing to the gradients.
            loss = sum(p.reshape(-1)[:1].sum() * 0.0 for p in model.parameters() if p.requires_grad)
            result = (loss, result[1]) if return_outputs else loss
        return result

    def _compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Inputs tokenised for the teacher (a teacher with its own tokenizer) are the teacher's alone.
        teacher_inputs = pop_teacher_inputs(inputs)
        if self.teacher is None or not model.training:
            # No teacher term (exactly Trainer), or evaluation (eval_loss is the student's own loss).
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if teacher_inputs:
            self._check_own_tokenizer_terms()

        args = self.args
        labels = inputs.get("labels")
        labelled_share = 1.0
        if self.has_transfer and labels is not None:
            # Transfer examples (label -100) train on the teacher terms alone; the hard-label term is the mean over
            # this batch's labelled examples, weighted by their share of the batch (see distilkit.transfer).
            labelled = int(labels.ne(NO_LABEL).sum())
            labelled_share = labelled / labels.shape[0]
            if labelled == 0:
                inputs = {k: v for k, v in inputs.items() if k != "labels"}
        alpha = loss_terms.soft_label_weight(args)
        if labels is None and alpha < 1:
            raise ValueError(
                f"The batch has no 'labels', so the hard-label loss (weight 1 - alpha = {1 - alpha}) cannot be "
                "computed. Add labels to the dataset or set alpha=1.0 to learn from the teacher alone."
            )
        cached = {k: inputs[k] for k in teacher_cache.CACHE_COLUMNS if k in inputs}
        model_inputs = {k: v for k, v in inputs.items() if k not in cached}
        student_inputs = dict(model_inputs)
        stage = self.current_stage()
        for name in loss_terms.outputs_needed(args, "student", stage):
            student_inputs[f"output_{name}"] = True
        # The model's loss is its per-batch mean; it is rescaled below like the distillation terms.
        outputs = model(**student_inputs)
        if cached and stage != loss_terms.INTERMEDIATE:  # the intermediate stage needs live hidden states/attention
            teacher_outputs = TeacherOutputs.from_cache(cached)
        else:
            teacher_outputs = self._teacher_forward(teacher_inputs or model_inputs, stage)
        batch = loss_terms.Batch(args=args, task=self.task, student=outputs, teacher=teacher_outputs,
                                 labels=inputs.get("labels"), attention_mask=inputs.get("attention_mask"),
                                 layer_map=self.layer_map, projections=self.projections, stage=stage)
        parts = loss_terms.compute_terms(batch)
        loss = loss_terms.weighted_total(args, parts, labelled_share)
        for name, value in parts.items():
            self._metrics[name].append(value.detach())

        # Follow the Trainer's gradient-accumulation convention: when it counted the items of the whole
        # accumulated batch, every term becomes (this batch's items / all items) * its per-batch mean.
        if num_items_in_batch is not None and labels is not None:
            items = labels.new_tensor(labels.shape[0]) if self.has_transfer else count_label_items(self.task, labels)
            loss = loss * (items.to(loss.device) / num_items_in_batch)
            if args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def current_stage(self) -> str | None:
        """The stage of the staged schedule at this optimizer step (None without one; see intermediate_epochs)."""
        if self.args.intermediate_epochs <= 0:
            return None
        boundary = round(self.args.intermediate_epochs * self._update_steps_per_epoch)
        return loss_terms.INTERMEDIATE if self.state.global_step < boundary else loss_terms.PREDICTION

    def set_initial_training_values(self, args, dataloader):
        values = super().set_initial_training_values(args, dataloader)
        self._update_steps_per_epoch = values[1]  # the staged schedule counts its epochs in optimizer steps
        return values

    def _teacher_forward(self, inputs, stage: str | None = None) -> TeacherOutputs:
        if self.teacher.training:  # a callback or user code may have switched it
            self.teacher.eval()
        needed = loss_terms.outputs_needed(self.args, "teacher", stage)
        want_hidden, want_attention = HIDDEN_STATES in needed, ATTENTIONS in needed
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        with torch.inference_mode():
            out = self.teacher(**teacher_inputs, output_hidden_states=want_hidden, output_attentions=want_attention)
        # Inference tensors cannot take part in autograd; a float copy made outside inference mode can.
        def clone(t):
            return None if t is None else t.float().clone()

        return TeacherOutputs(
            logits=clone(out.logits),
            hidden_states=tuple(clone(h) for h in out.hidden_states) if want_hidden else None,
            attentions=tuple(clone(a) for a in out.attentions) if want_attention else None,
        )

    def _get_num_items_in_batch(self, batch_samples, device):
        # With transfer data every example counts once, labelled or not (the Trainer counts labels != -100).
        if self.has_transfer:
            batch_samples = [{**b, "labels": torch.zeros_like(b["labels"])} if "labels" in b else b
                             for b in batch_samples]
        return super()._get_num_items_in_batch(batch_samples, device)

    # ---- logging: each part under its own name, averaged since the last log ----

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.nonfinite_batches_skipped:
            logs["nonfinite_batches_skipped"] = self.nonfinite_batches_skipped
        if self._metrics and "loss" in logs:  # a training log, not an evaluation one
            for name, values in self._metrics.items():
                mean = torch.stack([v.float() for v in values]).mean()
                logs[name] = round(self.accelerator.reduce(mean, reduction="mean").item(), 6)
            self._metrics.clear()
        super().log(logs, start_time)

    # ---- the model card (push_to_hub calls create_model_card too) ----

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None, **card_kwargs):
        """distilkit's model card in output_dir/README.md, on the main process only.

        Arguments as `Trainer.create_model_card` (finetuned_from: the teacher's Hub id), plus `rows=`,
        `latency_setup=` and `limitations=` of `distilkit.model_card.trainer_model_card`; `push_to_hub(**kwargs)`
        passes them through.
        """
        if not self.is_world_process_zero():
            return
        from .pruning import PruningCallback

        run = TrainingRun(
            args=self.args, student=self.model, teacher=self.teacher, layer_map=self.layer_map,
            log_history=self.state.log_history, optimizer_steps=self.state.global_step,
            pruning_callback=next((callback for callback in reversed(self.callback_handler.callbacks)
                                   if isinstance(callback, PruningCallback)), None),
            repo_id=getattr(self, "hub_model_id", None), transfer_examples=self.transfer_examples,
        )
        card = trainer_model_card(run, language=language, license=license, tags=tags, model_name=model_name,
                                  finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags,
                                  dataset=dataset, dataset_args=dataset_args, **card_kwargs)
        save_card(card, self.args.output_dir)

    # ---- checkpoints: projections live beside the student, never inside the exported model ----

    def _save(self, output_dir: str | None = None, state_dict=None):
        # Every save the Trainer makes (final model and checkpoints) is written aside and moved in when complete;
        # a compressed student gets the loading code that keeps plain transformers from misreading it.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:  # ranks that only join the gathers of a sharded model write nothing
            return super()._save(output_dir, state_dict)
        if self.args.push_to_hub and getattr(self, "push_in_progress", None) is not None:
            self._finish_current_push()  # an upload of output_dir must not see files being replaced
        parent_save = super()._save
        save_staged(output_dir, lambda staging: parent_save(str(staging), state_dict))

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # transformers copies config and weights from the checkpoint into output_dir before uploading it; the
        # loading code of a compressed student (which config.json's auto_map names) has to go along. transformers
        # skips the push (and the copy) while an earlier upload is still running; so does this.
        push = getattr(self, "push_in_progress", None)
        busy = not self.args.hub_always_push and push is not None and not push.is_done()
        if self.is_world_process_zero() and not busy:
            checkpoints.copy_loading_code(checkpoint_folder, self.args.output_dir)
        super()._push_from_checkpoint(checkpoint_folder)

    def _save_checkpoint(self, model, trial):
        checkpoint = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            checkpoints.start_checkpoint(checkpoint)
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            checkpoints.finish_checkpoint(checkpoint, self.projections, self.state.global_step)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = checkpoints.last_complete_checkpoint(self.args.output_dir)
        elif isinstance(resume_from_checkpoint, str | os.PathLike) and resume_from_checkpoint:
            checkpoints.check_complete(str(resume_from_checkpoint))
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval, **kwargs)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        checkpoints.match_checkpoint_structure(model if model is not None else self.model, resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        checkpoints.load_projections(resume_from_checkpoint, self.projections)


# Columns distilkit reads besides the model's forward arguments: cached teacher outputs, a teacher's own inputs.
DISTILLATION_COLUMNS = (*teacher_cache.CACHE_COLUMNS, *TEACHER_INPUT_COLUMNS)


def model_input_columns(model, args) -> list[str] | None:
    """The dataset columns a training batch keeps, as the Trainer decides under `remove_unused_columns`: the
    model's forward arguments, the label columns and `DISTILLATION_COLUMNS`; None (every column) when that is
    off or the model's forward cannot be read."""
    if not args.remove_unused_columns or model is None:
        return None
    try:
        forward = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return None
    return [*forward, "label", "label_ids", *(args.label_names or ["labels"]), *DISTILLATION_COLUMNS]


def _check_labels(model, dataset) -> None:
    """Empty data and labels outside the classifier's range fail here, not as an index error mid-epoch."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return
    if len(dataset) == 0:
        raise ValueError("train_dataset is empty: check the data files, the split and any filtering.")
    column = label_column(dataset)
    if model is None or column is None:
        return
    try:
        task = task_of(model)
    except ValueError:
        return
    if task.predicts_vocabulary or model.config.num_labels < 2:  # LM labels are token ids; 1 label = regression
        return
    labels = dataset[column]
    flat = [v for row in labels for v in row] if labels and isinstance(labels[0], list) else labels
    num_labels = model.config.num_labels
    bad = sorted({int(v) for v in flat if v != NO_LABEL and not 0 <= v < num_labels})
    if bad:
        raise ValueError(
            f"train_dataset has labels {bad[:10]} outside 0..{num_labels - 1}, but the model has num_labels="
            f"{num_labels}. Fix the labels or build the model with the right num_labels."
        )
