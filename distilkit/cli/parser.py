"""Reading a recipe: a YAML file (`--config`) merged with command-line flags into the section dataclasses.

Precedence, lowest first: the dataclass defaults, a command's built-in recipe (only `quickstart` has one), the
`--config` file, command-line flags. The flags are generated from the dataclasses by `HfArgumentParser`, so
their help texts and defaults are the dataclasses' own. Unknown names, in the file or on the command line, are
errors that list the valid names and suggest the closest one.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import os
import sys
import textwrap
import types
import typing
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .recipe import SECTIONS, Recipe


class RecipeError(ValueError):
    """A mistake in a recipe, on the command line, or in the data it names: shown without a traceback."""


def section_fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section]) if f.init]


def field_sections() -> dict[str, str]:
    """Field name -> the section that owns it (names are unique across sections; a test checks it)."""
    return {name: section for section in SECTIONS for name in section_fields(section)}


def field_aliases() -> dict[str, str]:
    """Another name a field answers to -> the field's name, from the "aliases" in the fields' metadata."""
    return {alias.lstrip("-").replace("-", "_"): f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)
            for alias in f.metadata.get("aliases", ())}


def _suggestion(name: str, candidates) -> str:
    candidates = list(candidates)
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not close and len(name) >= 3:  # an abbreviation: "temp" -> "temperature"
        close = sorted((c for c in candidates if c.startswith(name)), key=len)[:1]
    return f" Did you mean {close[0]!r}?" if close else ""


def _listing(names) -> str:
    return textwrap.fill(", ".join(names), width=110, initial_indent="    ", subsequent_indent="    ")


def unknown_field_error(name: str, where: str, sections: tuple[str, ...], section: str | None = None) -> RecipeError:
    """The error for a field that does not exist where it was given, with the closest valid name."""
    owner = field_sections().get(field_aliases().get(name, name))
    if section is not None:  # a key inside a section of a recipe file
        if owner is not None:
            return RecipeError(f"{where}: {name!r} is not a field of section {section!r}; it belongs under {owner}:.")
        valid = section_fields(section)
        return RecipeError(
            f"{where}: unknown field {name!r} in section {section!r}.{_suggestion(name, valid)}\n"
            f"Valid fields of {section!r}:\n{_listing(valid)}"
        )
    if owner is not None:  # a command-line flag of a section this command does not read
        return RecipeError(
            f"{where}: --{name} belongs to the {owner!r} section, which this command does not use (it reads "
            f"{', '.join(sections)})."
        )
    valid = [n for s in sections for n in section_fields(s)]
    listing = "\n".join(f"  {s}:\n{_listing(section_fields(s))}" for s in sections)
    return RecipeError(
        f"{where}: unknown field {name!r}.{_suggestion(name, valid)}\nValid fields, by recipe section:\n{listing}"
    )


def read_recipe_file(path: str | os.PathLike) -> dict[str, dict]:
    """The sections of a recipe file, every key checked against the schema (not only the sections a command uses)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must be a mapping of sections ({', '.join(SECTIONS)}), not {type(data).__name__}.")
    owners = field_sections()
    aliases = field_aliases()
    recipe: dict[str, dict] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            if section in owners:
                raise RecipeError(
                    f"{path}: {section!r} is a field, not a section; put it under {owners[section]}: "
                    f"(sections: {', '.join(SECTIONS)})."
                )
            raise RecipeError(
                f"{path}: unknown section {section!r}.{_suggestion(str(section), SECTIONS)} Sections: "
                f"{', '.join(SECTIONS)}."
            )
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise RecipeError(f"{path}: section {section!r} must be a mapping of field: value.")
        valid = set(section_fields(section))
        for name in values:
            if aliases.get(name, name) not in valid:
                raise unknown_field_error(str(name), str(path), tuple(SECTIONS), section=section)
        recipe[section] = {aliases.get(name, name): value for name, value in values.items()}
        if len(recipe[section]) < len(values):
            raise RecipeError(f"{path}: section {section!r} sets a field twice, under its name and an alias "
                              f"({', '.join(f'{a} = {n}' for a, n in aliases.items() if a in values)}).")
    return recipe


def merge_recipes(base: dict[str, dict], override: dict[str, dict]) -> dict[str, dict]:
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in override.items():
        merged.setdefault(section, {}).update(values)
    return merged


def _argparse_type(annotation):
    """`dict | str` (DistillationConfig.layer_map) becomes `str`: the dataclass parses the text itself.

    HfArgumentParser keeps the first non-str member of such a union, and `dict("1:2")` fails.
    """
    members = typing.get_args(annotation)
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if is_union and str in members and len([m for m in members if m is not type(None)]) > 1:
        return str | None if type(None) in members else str
    return annotation


def _to_plain(value):
    """A value that yaml.safe_dump can write."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return str(getattr(value, "value", value))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each field once (`--student_layers N`; the `--student-layers` spelling works too), with its default."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=36, width=120)

    def _format_action_invocation(self, action):
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return f"{action.option_strings[0]} {self._format_args(action, self._get_default_metavar_for_optional(action))}"

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, "") and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class RecipeParser(HfArgumentParser):
    """The parser of one command: `--config` plus one flag per field of the sections the command reads."""

    def __init__(self, command: str, sections: tuple[str, ...], description: str = "",
                 base: dict[str, dict] | None = None):
        self.command = command
        self.sections = tuple(sections)
        self.base = base or {}
        super().__init__(
            [SECTIONS[s] for s in self.sections],
            prog=f"distilkit {command}",
            usage=f"distilkit {command} [--config RECIPE.yaml] [--FIELD VALUE ...]",
            description=description,
            formatter_class=_HelpFormatter,
            allow_abbrev=False,  # `--temp 4` must not silently mean --temperature
            epilog="Every field can also be set in the recipe file, under its section: "
            + ", ".join(f"{s}:" for s in self.sections)
            + ". Command-line flags override the file.",
        )
        self.add_argument("--config", metavar="RECIPE.yaml", default=None,
                          help="Recipe file (YAML); command-line flags override its values.")

    def _add_dataclass_arguments(self, dtype):
        section = next(name for name, cls in SECTIONS.items() if cls is dtype)
        doc = (dtype.__doc__ or "").strip().splitlines()[0] if section != "training" else (
            "distilkit.DistillationConfig: the distillation fields, the head-pruning fields, then every "
            "transformers.TrainingArguments field."
        )
        group = self.add_argument_group(f"{section}: section of the recipe", doc)
        hints = typing.get_type_hints(dtype)
        fields = [f for f in dataclasses.fields(dtype) if f.init]
        if section == "training":  # distillation fields, head-pruning ones, then the long TrainingArguments list
            own = dtype.__dict__.get("__annotations__", {})
            inherited = {f.name for f in dataclasses.fields(TrainingArguments)}
            fields.sort(key=lambda f: 0 if f.name in own else 2 if f.name in inherited else 1)
        for original in fields:
            # A copy, so the dataclass's own Field objects are not modified.
            field = copy.copy(original)
            field.type = _argparse_type(hints[original.name])
            metadata = dict(original.metadata)
            if "help" in metadata:  # argparse %-formats help texts
                metadata["help"] = metadata["help"].replace("%", "%%")
            field.metadata = types.MappingProxyType(metadata)
            self._parse_dataclass_field(group, field)

    def error(self, message):  # argparse would print the (very long) usage and exit
        raise RecipeError(f"{message} (see `distilkit {self.command} --help`)")

    def parse(self, argv: list[str]) -> Recipe:
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--config", default=None)
        known, _ = pre.parse_known_args(argv)
        file_values = read_recipe_file(known.config) if known.config else {}
        values = merge_recipes(self.base, file_values)
        where = "command line"
        defaults = {}
        for section in self.sections:
            defaults.update(values.get(section, {}))
        self.set_defaults(**defaults)

        namespace, remaining = self.parse_known_args(argv)
        if remaining:
            flags = [r for r in remaining if r.startswith("-")]
            if not flags:
                raise RecipeError(f"{where}: unexpected argument(s) {remaining}; fields are given as --name value.")
            name = flags[0].lstrip("-").split("=", 1)[0].replace("-", "_")
            raise unknown_field_error(name, where, self.sections)

        recipe = Recipe(command=self.command, config_path=known.config)
        given = vars(namespace)
        aliases = field_aliases()
        named = {aliases.get(name, name) for name in (arg[2:].split("=", 1)[0].replace("-", "_")
                                                      for arg in argv if arg.startswith("--"))}
        for section in self.sections:
            names = section_fields(section)
            kwargs = {name: given[name] for name in names if name in given}
            try:
                setattr(recipe, section, SECTIONS[section](**kwargs))
            except (ValueError, TypeError) as err:
                raise RecipeError(f"invalid {section} settings: {err}") from err
            # What the user asked for: the file's values, then every flag named on the command line or that
            # changed one (a flag given with its default value counts: `compress` needs some spelled out).
            asked = dict(values.get(section, {}))
            for name in names:
                if name in given and (name in named or given[name] != self.get_default(name)) and name != "config":
                    asked[name] = given[name]
            if asked:
                recipe.values[section] = {k: _to_plain(v) for k, v in asked.items()}
        return recipe


def write_recipe(recipe: Recipe, folder: str | os.PathLike, name: str = "distilkit_recipe.yaml") -> Path:
    """Save the recipe as it was asked for beside the outputs, so a run can be repeated with --config."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# Written by `distilkit {recipe.command}`; repeat with: distilkit {recipe.command} --config {name}\n"
    path.write_text(header + yaml.safe_dump(recipe.values, sort_keys=False), encoding="utf-8")
    return path


def print_error(command: str, err: Exception) -> None:
    print(f"distilkit {command}: error: {err}", file=sys.stderr)
