"""Pushing a saved model folder to the Hugging Face Hub: `check_folder` says what it lacks, `push_folder` checks it,
creates the repo and uploads it. The model card the folder needs is distilkit.model_card's.

    write_model_card("out", teacher="org/teacher", ...)   # distilkit.model_card
    push_folder("out", "user/name")                 # checks the folder, creates the repo, uploads, returns the URL
    distilkit.from_pretrained("user/name")          # downloads it and loads it back, pruned and int8 included
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id

from . import __version__
from .model_card import CARD_FILE

# Never uploaded: Trainer checkpoints, private files (the same patterns as Trainer.push_to_hub) and hidden files.
UPLOAD_IGNORE_PATTERNS = ["_*", "checkpoint-*", ".*", *DEFAULT_IGNORE_PATTERNS]
_TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                           "tokenizer.model")


class IncompleteFolderError(ValueError):
    """The folder misses something a Hub repo needs; raised before anything is sent."""

    def __init__(self, folder: Path, problems: Sequence[str]):
        self.folder, self.problems = folder, list(problems)
        super().__init__(f"{folder} is not ready to push; nothing was uploaded:\n" +
                         "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    files: tuple[str, ...]
    dry_run: bool
    commit_url: str | None = None


def check_folder(folder: str | os.PathLike) -> list[str]:
    """What `folder` lacks to be pushed and loaded back (empty: complete): config.json naming a model class,
    safetensors weights (all shards), tokenizer files, and a README.md model card whose YAML metadata parses and
    whose library_name matches config.json (a pruned or int8 model needs distilkit to load)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder."]
    problems = []
    config: dict = {}
    config_path = folder / "config.json"
    if not config_path.is_file():
        problems.append("config.json is missing: save the model with model.save_pretrained(folder).")
    else:
        try:
            config = json.loads(config_path.read_text())
        except ValueError as err:
            problems.append(f"config.json is not valid JSON ({err}).")
        if config and not config.get("architectures"):
            problems.append("config.json names no model class (architectures); save with model.save_pretrained.")

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError) as err:
            problems.append(f"model.safetensors.index.json is not a valid index ({err}).")
        else:
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                problems.append(f"weight shards listed in model.safetensors.index.json are missing: {missing}.")
    elif not (folder / "model.safetensors").is_file():
        pickled = [p.name for p in folder.glob("*.bin")]
        problems.append(
            "no safetensors weights (model.safetensors)" + (f"; found only pickle weights {pickled}" if pickled else "")
            + ": save with model.save_pretrained(folder) (safetensors is the default)."
        )

    if not (folder / "tokenizer_config.json").is_file() or not any(
            (folder / name).is_file() for name in _TOKENIZER_VOCABULARIES):
        problems.append("tokenizer files are missing (tokenizer_config.json plus tokenizer.json or a vocabulary): "
                        "save them with tokenizer.save_pretrained(folder).")

    readme = folder / CARD_FILE
    if not readme.is_file():
        problems.append("README.md (the model card) is missing: write it with "
                        "distilkit.model_card.write_model_card(folder, teacher=...) or trainer.create_model_card().")
    else:
        metadata, error = _card_metadata(readme)
        if error:
            problems.append(f"README.md has no valid YAML metadata block ({error}).")
        elif config.get("distilkit") and metadata.get("library_name") != "distilkit":
            problems.append(
                f"README.md says library_name: {metadata.get('library_name')!r}, but config.json records distilkit "
                f"compression ({', '.join(sorted(config['distilkit']))}), which only distilkit.from_pretrained loads: "
                "regenerate the card with distilkit.model_card.write_model_card(folder, ...)."
            )
    return problems


def _card_metadata(readme: Path) -> tuple[dict, str | None]:
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}, "the file does not start with a '---' metadata block"
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        return {}, "the '---' metadata block is not closed"
    try:
        metadata = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as err:
        return {}, f"invalid YAML: {err}"
    if not isinstance(metadata, dict):
        return {}, "the metadata block is not a YAML mapping"
    return metadata, None


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """The files `push_folder` uploads, relative to `folder` (checkpoints, `_*` and hidden files left out)."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=UPLOAD_IGNORE_PATTERNS))


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model with distilkit",
) -> PushResult:
    """Check `folder` (see `check_folder`), create the model repo `repo_id` if needed and upload the folder.

    Nothing is sent when the folder is incomplete (`IncompleteFolderError`) or with `dry_run=True`, which returns
    the files that would be uploaded. The token is `token`, else HF_TOKEN, else the saved login (`hf auth login`);
    the Hub is `endpoint`, else HF_ENDPOINT, else huggingface.co. `private` applies when the repo is created; an
    existing repo keeps its visibility. Returns the repo URL and the uploaded files.
    """
    folder = Path(folder)
    validate_repo_id(repo_id)
    problems = check_folder(folder)
    if problems:
        raise IncompleteFolderError(folder, problems)
    files = tuple(files_to_upload(folder))
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, library_name="distilkit",
                library_version=__version__)
    if dry_run:
        return PushResult(repo_id=repo_id, url=f"{api.endpoint.rstrip('/')}/{repo_id}", files=files, dry_run=True)
    token = token or get_token()
    if not token:
        raise PermissionError(
            "No Hugging Face token: set HF_TOKEN or log in with `hf auth login` (a token with write access)."
        )
    try:
        repo_url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_url.repo_id, folder_path=folder, token=token, revision=revision,
            commit_message=commit_message, ignore_patterns=UPLOAD_IGNORE_PATTERNS,
        )
    except Exception as err:
        # huggingface_hub's HTTP errors are OSErrors already; its transport errors (httpx) are not.
        if isinstance(err, OSError) or not _is_transport_error(err):
            raise
        raise ConnectionError(f"Could not reach the Hub at {api.endpoint} ({type(err).__name__}: {err}).") from err
    return PushResult(repo_id=repo_url.repo_id, url=str(repo_url), files=files, dry_run=False,
                      commit_url=commit.commit_url)


def _is_transport_error(err: Exception) -> bool:
    """A connection, timeout or protocol failure of the HTTP client huggingface_hub uses (httpx or httpx2)."""
    return any(cls.__name__ == "TransportError" and cls.__module__.startswith("httpx") for cls in type(err).__mro__)
