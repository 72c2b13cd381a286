"""For the tests of benchmarks/: import the harness or one script from that folder (as Python runs a script: with
its folder on sys.path, so the script's own `import harness` works), and read markdown tables back into cells, so a
report test asserts the data it shows rather than its sentences."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def import_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module ("harness", or a script such as "kd_sweep")."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every table of a markdown text, each a list of rows {header cell: cell}, cells stripped."""
    tables, lines = [], text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and set(lines[i + 1].replace("|", "")) <= {"-", ":", " "} and "-" in lines[i + 1] \
                and not (i and lines[i - 1].startswith("|")):
            header = _cells(line)
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(header, _cells(row), strict=True)))
            tables.append(rows)
    return tables


def table_with(text: str, column: str) -> list[dict[str, str]]:
    """The one table of `text` that has `column`."""
    found = [table for table in markdown_tables(text) if table and column in table[0]]
    assert len(found) == 1, f"{len(found)} tables with a column {column!r}"
    return found[0]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]
