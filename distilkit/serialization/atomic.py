"""Publishing files and folders atomically: everything is written into a staging path first, then moved in.

A reader (another process, a resumed run, `distilkit.from_pretrained`) never sees a half-written result: a
process killed while writing leaves the staging path aside and the previous result untouched.

  * `publishing_file(path)`: a file replaced in one rename (a results json);
  * `publishing_folder(folder)`: a folder that appears complete in one rename (a cache entry, a model folder
    that holds nothing else);
  * `publishing_into(folder)`: the entries of a save moved into a folder that also holds other files
    (checkpoints, logs). That takes several renames, done while `SAVING_MARKER` is present; `check_not_interrupted`
    refuses a folder that still holds it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_PREFIX = ".distilkit-staging-"
# Present in a folder while `publishing_into` moves a finished save into it (a few renames): a folder that still
# holds it was interrupted at that moment and may mix files of two saves.
SAVING_MARKER = ".distilkit-save-in-progress"


def _staging_beside(target: Path) -> Path:
    return target.parent / f"{STAGING_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"


@contextmanager
def publishing_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging path beside `path` to write; when the block ends without error it replaces `path`."""
    path = Path(path)
    staging = _staging_beside(path)
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


@contextmanager
def publishing_folder(folder: str | os.PathLike, keep_existing: bool = False) -> Iterator[Path]:
    """Yield a staging folder path beside `folder` (not created) to write; when the block ends without error it
    becomes `folder`. An existing `folder` is replaced, or, with `keep_existing`, kept and the staged copy dropped
    (another process published the same content first)."""
    folder = Path(folder)
    staging = _staging_beside(folder)
    try:
        yield staging
        if folder.exists() and not keep_existing:
            shutil.rmtree(folder)
        try:
            os.replace(staging, folder)
        except OSError:
            if not (keep_existing and folder.is_dir()):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def publishing_into(folder: str | os.PathLike, last: str | None = None,
                    stale: Callable[[str], bool] = lambda name: False) -> Iterator[Path]:
    """Yield a fresh staging folder inside `folder` to write; when the block ends without error, move each of its
    entries into `folder` (`last` after all others) under `SAVING_MARKER`.

    Entries already in `folder` are kept, except those for which `stale(name)` is true and that the new save does
    not bring (files of an older save that must not mix with this one). Staging folders left by killed writes
    are removed first.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for left in folder.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(left, ignore_errors=True)
    staging = folder / f"{STAGING_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        yield staging
        _move_entries(staging, folder, last, stale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_entries(staging: Path, folder: Path, last: str | None, stale: Callable[[str], bool]) -> None:
    marker = folder / SAVING_MARKER
    with open(marker, "w") as handle:
        handle.write(f"moving a finished save from {staging.name}\n")
        handle.flush()
        os.fsync(handle.fileno())
    entries = sorted(staging.iterdir(), key=lambda p: p.name == last)
    new_names = {p.name for p in entries}
    for old in folder.iterdir():
        if stale(old.name) and old.name not in new_names:
            old.unlink()
    for entry in entries:
        target = folder / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    marker.unlink()


def check_not_interrupted(folder: Path) -> None:
    """Raise if a save into `folder` was interrupted while its files were moved in."""
    if (folder / SAVING_MARKER).exists():
        raise OSError(
            f"{folder} holds an interrupted save ({SAVING_MARKER} is present): its files may come from two "
            "different saves. Save the model again, or load an earlier checkpoint."
        )
