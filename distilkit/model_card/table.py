"""The card's results table: `ModelRow`, one row per model (teacher, student, pruned, int8, ...), and
`measure_model`, which fills a row from a model with distilkit's measurements."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..measure import count_parameters, cpu_latency_ms, folder_size_mb


@dataclass
class ModelRow:
    """One row of the card's table. `None` is shown as "–" (not measured).

    `this_model` marks the model the card describes (the one in the folder/repo): its metrics become the card's
    model-index results, and its row is filled from the folder when parameters or size are missing.
    """

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    size_mb: float | None = None
    latency_ms: float | None = None
    this_model: bool = False

    def merged(self, other: ModelRow) -> ModelRow:
        """This row with the values `other` sets (metrics merged key by key)."""
        return replace(
            self,
            metrics={**self.metrics, **other.metrics},
            parameters=other.parameters if other.parameters is not None else self.parameters,
            size_mb=other.size_mb if other.size_mb is not None else self.size_mb,
            latency_ms=other.latency_ms if other.latency_ms is not None else self.latency_ms,
        )


def measure_model(
    model,
    name: str,
    *,
    folder: str | os.PathLike | None = None,
    metrics: Mapping[str, float] | None = None,
    latency: Mapping[str, int] | None = None,
    this_model: bool = False,
) -> ModelRow:
    """A table row for `model`: parameters, size of `folder`'s weights (else of the weights in memory) and, when
    `latency=dict(batch_size=1, seq_len=128, threads=2)` is given, CPU latency (`measure.cpu_latency_ms`).
    Say how latency was measured with `latency_setup=` when rendering the card."""
    size = folder_size_mb(folder) if folder is not None else _weights_mb(model)
    return ModelRow(
        name=name,
        metrics=dict(metrics or {}),
        parameters=count_parameters(model),
        size_mb=size,
        latency_ms=cpu_latency_ms(model, **latency) if latency else None,
        this_model=this_model,
    )


def merge_rows(table: Sequence[ModelRow], rows: Sequence[ModelRow]) -> list[ModelRow]:
    """`table` with `rows` merged in: a row completes the table's `this_model` row (when it is `this_model`) or
    the row of the same name; other rows are appended."""
    table = list(table)
    for row in rows:
        target = next((i for i, r in enumerate(table)
                       if (row.this_model and r.this_model) or (not row.this_model and r.name == row.name)), None)
        if target is None:
            table.append(row)
        else:
            table[target] = table[target].merged(row)
    return table


def complete_rows(rows: Sequence[ModelRow], record: Mapping, folder: Path | None) -> list[ModelRow]:
    """The rows with exactly one `this_model` row, whose missing parameters and size come from the folder."""
    rows = list(rows)
    marked = [i for i, row in enumerate(rows) if row.this_model]
    if len(marked) > 1:
        raise ValueError(f"Only one table row can be this_model=True; got {[rows[i].name for i in marked]}.")
    if not marked:
        rows.append(ModelRow(name=default_row_name(record), this_model=True))
        marked = [len(rows) - 1]
    row = rows[marked[0]]
    if folder is not None and folder.is_dir():
        if row.parameters is None:
            row = replace(row, parameters=stored_parameter_count(folder, record))
        if row.size_mb is None and any(folder.glob("*.safetensors")):
            row = replace(row, size_mb=folder_size_mb(folder))
    rows[marked[0]] = row
    return rows


def default_row_name(record: Mapping) -> str:
    """The described model's row name from its compression record: "student", "student (pruned, int8)", ..."""
    applied = [label for keys, label in ((("pruning", "ffn_pruning"), "pruned"), (("quantization",), "int8"))
               if any(key in record for key in keys)]
    return "student" + (f" ({', '.join(applied)})" if applied else "")


def stored_parameter_count(folder: Path, record: Mapping) -> int | None:
    """`measure.count_parameters` of the saved model, read from the safetensors headers (nothing loaded):
    every stored tensor except the scales of int8 layers (their int8 weights and float biases count)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    quantized = record.get("quantization") or {}
    buffers = {f"{name}.weight_scale" for kind in ("linear", "embedding") for name in quantized.get(kind, [])}
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safetensors' safe_open has keys() but is not iterable)
                if key not in buffers:
                    total += math.prod(weights.get_slice(key).get_shape())
    return total


def _weights_mb(model) -> float:
    """Bytes the model's tensors take in a safetensors file (tied tensors once), in MB."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in model.state_dict().values():
        seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset())] = tensor.numel() * tensor.element_size()
    return sum(seen.values()) / 1e6
