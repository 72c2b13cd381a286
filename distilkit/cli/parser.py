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
import sys
import types
import typing

from transformers import HfArgumentParser, TrainingArguments

from ..pipeline.recipe import (
    SECTIONS,
    Recipe,
    RecipeError,
    _to_plain,
    field_aliases,
    merge_recipes,
    read_recipe_file,
    section_fields,
    unknown_field_error,
)


def _argparse_type(annotation):
    """`dict | str` (DistillationConfig.layer_map) becomes `str`: the dataclass parses the text itself.

    HfArgumentParser keeps the first non-str member of such a union, and `dict("1:2")` fails.
    """
    members = typing.get_args(annotation)
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    if is_union and str in members and len([m for m in members if m is not type(None)]) > 1:
        return str | None if type(None) in members else str
    return annotation


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


def print_error(command: str, err: Exception) -> None:
    print(f"distilkit {command}: error: {err}", file=sys.stderr)
