"""How accurate a candidate shape is likely to end up: a cheap quality score from the teacher and the task data.

The plan chooses among the shapes that meet the budget by this score, not by parameter count. For a candidate, the
teacher is pruned one-shot to the candidate's shape, and the score is how far the pruned teacher's outputs move
from the teacher's, forward only:

* layers: chosen by measured drop-one-layer cost. Greedily, the layer whose removal changes the teacher's outputs
  least goes first, then the next given the first, and so on (`QualityProbe.layer_order`); a candidate with k
  layers keeps the k that survive longest. Evenly spaced layers ignore that some layers matter more than others
  (the first and last usually matter most);
* heads and FFN neurons of each kept layer: the most important by Taylor importance (`distilkit.pruning`) on
  labelled training batches, the candidate's count per layer;
* score: the mean KL(teacher ‖ pruned teacher) of the class distributions on held-out training rows (rows not used
  for the importance). Lower is better; 0 is the teacher itself.

Precision is not part of the score: a shape scores the same in float and in int8 (int8 predictions agree with
float on 99%+ of real rows; benchmarks/results/quantization.md). The same pruning (`QualityProbe.prune_to`) gives
the student its layers and, per layer, which heads and neurons the gradual pruning keeps when the plan is made.
How well the score predicts the final distilled accuracy is measured in benchmarks/results/quality_score.md
(`benchmarks/quality_score.py`: Spearman's rank correlation over distilled shapes on SST-2).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..architectures import get_architecture
from ..pruning import compute_ffn_importance, compute_head_importance, prune_ffn, prune_heads
from ..pruning.structural import head_group_size
from .shape import ModelShape

DEFAULT_SCORE_ROWS = 256
DEFAULT_IMPORTANCE_ROWS = 128


@dataclass
class QualityProbe:
    """What scoring needs, computed once per teacher and data: the held-out batches with the teacher's log-probs,
    the per-layer head and neuron importance ([layers, heads], [layers, neurons]) and the greedy layer order."""

    teacher: nn.Module
    batches: list[dict]
    teacher_log_probs: list[torch.Tensor]
    head_importance: torch.Tensor
    ffn_importance: torch.Tensor
    removal_order: list[int]  # teacher layers, the first to remove first; the last one is never removed

    @classmethod
    def build(cls, teacher: nn.Module, dataset, collator, *, score_rows: int = DEFAULT_SCORE_ROWS,
              importance_rows: int = DEFAULT_IMPORTANCE_ROWS, batch_size: int = 32, seed: int = 0,
              progress: bool = False, removal_order: Sequence[int] | None = None) -> QualityProbe:
        """Importance on `importance_rows` labelled rows of `dataset`, the score on the next `score_rows` rows
        (fewer when the data is small: then they overlap). The teacher is used as it is (eval mode, no grad).
        `removal_order`: the layer ranking (`removal_order`) when it is known already; else it is measured."""
        if dataset is None or len(dataset) == 0:
            raise ValueError("The quality score needs training rows: give the labelled train_dataset.")
        if collator is None:
            raise ValueError("The quality score collates training rows into batches: give data_collator (or a "
                             "tokenizer, for padding).")
        layers = teacher.config.num_hidden_layers
        if removal_order is not None and sorted(removal_order) != list(range(layers)):
            raise ValueError(f"removal_order must list each of the teacher's {layers} layers once; got "
                             f"{list(removal_order)}.")
        importance_part, score_part, _ = split_rows(len(dataset), importance_rows, score_rows, seed)
        keep = [c for c in dataset.column_names if c in _input_columns(teacher) | {"labels", "label"}]
        data = dataset.select_columns(keep)
        importance_loader = DataLoader(data.select(importance_part), batch_size=batch_size, collate_fn=collator)
        score_loader = DataLoader(data.select(score_part), batch_size=batch_size, collate_fn=collator)
        was_training = teacher.training
        teacher.eval()
        try:
            batches = [{k: v for k, v in b.items() if k not in ("labels", "label")} for b in score_loader]
            teacher_log_probs = [_log_probs(teacher, b) for b in batches]
            heads = compute_head_importance(teacher, importance_loader, "taylor")
            neurons = compute_ffn_importance(teacher, importance_loader, "taylor")
            probe = cls(teacher, batches, teacher_log_probs, heads, neurons, list(removal_order or []))
            if removal_order is None:
                probe.removal_order = probe._greedy_removal_order(progress)
        finally:
            teacher.train(was_training)
        return probe

    @property
    def num_layers(self) -> int:
        return self.head_importance.shape[0]

    def keep_layers(self, count: int) -> list[int]:
        """The `count` teacher layers a candidate with `count` layers keeps: those removed last, in order."""
        if not 0 < count <= self.num_layers:
            raise ValueError(f"Cannot keep {count} of the teacher's {self.num_layers} layers.")
        return sorted(self.removal_order[self.num_layers - count:])

    def prune_to(self, model: nn.Module, shape: ModelShape, keep_layers: Sequence[int]) -> None:
        """Prune `model` (the teacher's kept layers, in place) to `shape`'s heads and neurons per layer, keeping
        the most important ones of each layer (the teacher's importance of its layers `keep_layers`)."""
        heads, neurons = self.kept_units(shape, keep_layers)
        num_heads, width = self.head_importance.shape[1], self.ffn_importance.shape[1]
        prune_heads(model, {i: sorted(set(range(num_heads)) - set(k)) for i, k in enumerate(heads)
                            if len(k) < num_heads})
        prune_ffn(model, {i: sorted(set(range(width)) - set(k)) for i, k in enumerate(neurons) if len(k) < width})

    def kept_units(self, shape: ModelShape, keep_layers: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Per kept layer, the heads and the FFN neurons `shape` keeps: the most important ones (whole key/value
        groups for grouped-query attention)."""
        if len(keep_layers) != shape.num_layers:
            raise ValueError(f"{shape.key()} has {shape.num_layers} layers; keep_layers has {len(keep_layers)}.")
        group = head_group_size(self.teacher.config)
        heads = [_top(self.head_importance[layer], count, group) for layer, count in zip(keep_layers, shape.heads)]
        neurons = [_top(self.ffn_importance[layer], count, 1) for layer, count in zip(keep_layers, shape.ffn)]
        return heads, neurons

    def score(self, shape: ModelShape) -> float:
        """KL(teacher ‖ the teacher pruned one-shot to `shape`), mean over the held-out rows (precision aside)."""
        keep = self.keep_layers(shape.num_layers)
        model = pruned_copy(self.teacher, keep).eval()  # the teacher may be in training mode: no dropout here
        self.prune_to(model, shape, keep)
        return self.divergence(model)

    # ---- internals ----

    def divergence(self, model: nn.Module) -> float:
        """Mean KL(teacher ‖ `model`) of the class distributions over the score rows, batch by batch in order (any
        model with the teacher's inputs and labels: a pruned copy, a student)."""
        total, rows = 0.0, 0
        for batch, reference in zip(self.batches, self.teacher_log_probs):
            log_probs = _log_probs(model, batch)
            kl = torch.sum(reference.exp() * (reference - log_probs), dim=-1)
            total += float(kl.sum())
            rows += kl.shape[0]
        return total / max(rows, 1)

    def _greedy_removal_order(self, progress: bool) -> list[int]:
        """Layers in the order a greedy search removes them: each time the one whose removal (given those already
        removed) changes the teacher's outputs least. The last layer standing is listed last.

        Removing a layer leaves the layers before it as they were, so the hidden states entering each kept layer
        are kept (one tensor per layer and score batch) and a trial runs only the layers after the removed one,
        from the input the removed layer had (removing the last kept layer: its predecessor again, from its own
        input): half the layer passes of running every trial from the embeddings, and the same numbers."""
        from tqdm.auto import tqdm

        layers = self.teacher.base_model.get_submodule(get_architecture(self.teacher).layers)
        kept = list(range(self.num_layers))
        entering = self._layer_inputs(layers, kept, [None] * len(self.batches))
        order = []
        steps = tqdm(total=self.num_layers * (self.num_layers + 1) // 2 - 1, desc="ranking the teacher's layers",
                     disable=not progress)
        while len(kept) > 1:
            costs = {}
            for position, layer in enumerate(kept):
                if position + 1 < len(kept):  # the layers after it, from the input it had
                    run, inputs = kept[position + 1:], entering[position]
                else:  # the last one: the output is its predecessor's
                    run, inputs = [kept[position - 1]], entering[position - 1]
                with only_layers(self.teacher, run), _first_layer_input(layers[run[0]], inputs):
                    costs[layer] = self.divergence(self.teacher)
                steps.update()
            cheapest = min(kept, key=lambda i: (costs[i], i))
            position = kept.index(cheapest)
            order.append(cheapest)
            kept.remove(cheapest)
            start = entering[position]
            del entering[position:]  # freed before the layers after the removed one are run again
            if position < len(kept):  # they now see other inputs
                entering += self._layer_inputs(layers, kept[position:], start)
        steps.close()
        return order + kept

    def _layer_inputs(self, layers: nn.ModuleList, run: list[int], start: list) -> list[list[torch.Tensor]]:
        """Per layer of `run` (teacher layer indices), the hidden states entering it for each score batch, running
        only `run` from the hidden states `start` (per batch; None: from the embeddings). They are kept on the
        teacher's device: score rows x tokens x hidden size values per layer (MPNet-base, 128 rows of 64 tokens:
        25 MB a layer)."""
        given = 1 if start[0] is not None else 0  # the first layer's inputs are `start` itself: kept, not copied
        entering: list[list[torch.Tensor]] = [list(start)] * given + [[] for _ in run[given:]]

        def keeper(position):
            def hook(module, args, kwargs):
                entering[position].append(_hidden_states_of(args, kwargs).clone())
            return hook

        # In front of any hook the model has, behind the swap of the first layer's input (put in front later).
        handles = [layers[run[i]].register_forward_pre_hook(keeper(i), with_kwargs=True, prepend=True)
                   for i in range(given, len(run))]
        try:
            with only_layers(self.teacher, run), _first_layer_input(layers[run[0]], start):
                self.divergence(self.teacher)
        finally:
            for handle in handles:
                handle.remove()
        return entering


def split_rows(count: int, importance_rows: int, score_rows: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """The rows of a dataset of `count` rows `QualityProbe.build` uses, by index: (importance rows, score rows,
    the rest), from one seeded permutation. With too few rows the score rows overlap the importance rows (and
    nothing is left)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    importance = order[:min(importance_rows, count)]
    score = order[len(importance):len(importance) + score_rows]
    return importance, score or order[:score_rows], order[len(importance) + len(score):]


def pruned_copy(teacher: nn.Module, keep_layers: Sequence[int]) -> nn.Module:
    """A copy of `teacher` with only the layers `keep_layers` (weights shared with nothing: safe to prune)."""
    with only_layers(teacher, keep_layers):
        return copy.deepcopy(teacher)


@contextmanager
def only_layers(model: nn.Module, keep_layers: Sequence[int]):
    """Within the block, `model` runs with only the layers `keep_layers` (the layer list swapped in place; the
    config's layer count and per-layer lists follow); put back afterwards."""
    spec = get_architecture(model)
    parent_path, _, name = spec.layers.rpartition(".")
    parent = model.base_model.get_submodule(parent_path) if parent_path else model.base_model
    layers = getattr(parent, name)
    config = model.config
    saved = (config.num_hidden_layers, getattr(config, "layer_types", None))
    setattr(parent, name, nn.ModuleList([layers[i] for i in keep_layers]))
    config.num_hidden_layers = len(keep_layers)
    if isinstance(saved[1], list) and len(saved[1]) == len(layers):
        config.layer_types = [saved[1][i] for i in keep_layers]
    try:
        yield model
    finally:
        setattr(parent, name, layers)
        config.num_hidden_layers = saved[0]
        if isinstance(saved[1], list):
            config.layer_types = saved[1]


@contextmanager
def _first_layer_input(layer: nn.Module, inputs: Sequence[torch.Tensor | None]):
    """Within the block, `layer` receives `inputs[k]` as its hidden states on its k-th call (the k-th score batch:
    a layer runs once per forward pass) instead of what the layers before it computed (None: what they computed)."""
    supply = iter(inputs)

    def swap(module, args, kwargs):
        replacement = next(supply)
        if replacement is None:
            return None
        if args:
            return (replacement, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": replacement}

    handle = layer.register_forward_pre_hook(swap, with_kwargs=True, prepend=True)  # before any hook that reads
    try:
        yield
    finally:
        handle.remove()


def _hidden_states_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a transformer layer was called with (every family in the architecture table passes them
    first, positionally or by name)."""
    return args[0] if args else kwargs["hidden_states"]


def _top(importance: torch.Tensor, count: int, group: int) -> list[int]:
    """The `count` most important units of one layer (whole groups of `group`), in increasing order."""
    scores = importance.nan_to_num(nan=-math.inf).reshape(-1, group).sum(-1)
    groups = sorted(torch.argsort(scores, descending=True)[:count // group].tolist())
    return [g * group + i for g in groups for i in range(group)]


def _input_columns(model: nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


@torch.inference_mode()
def _log_probs(model: nn.Module, batch: dict) -> torch.Tensor:
    device = next(model.parameters()).device
    # No key/value cache: a layer subset keeps its layers' indices into the cache, which holds fewer layers.
    no_cache = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    logits = model(**{k: v.to(device) for k, v in batch.items()}, **no_cache).logits.float()
    return torch.log_softmax(logits, dim=-1).cpu()
