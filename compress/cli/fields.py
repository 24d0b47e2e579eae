"""Command-line options derived from the method config dataclasses.

`compress prune`, `quantize` and `distill` take one option per field of their methods' configs: the
flag is the field name (`round_to` -> `--round-to`), the type is the field's, the help is the field's
line in the config's `Attributes:` docstring, prefixed with the methods that have it. Adding a field
to a method's config adds its flag; nothing in `cli/` changes. A flag the chosen `--method` lacks is
a one-line error. Fields the command line cannot express (nested sections, mappings, pairs) are set
with `--config FILE.yaml`.

The options are built when the subcommand is parsed or asked for its help, not when `compress` starts,
because the config classes live beside their methods and import torch: `compress --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import re
import types
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import typer
from typer.core import TyperCommand

PANEL = "Method options (the rest: --config FILE.yaml)"
_META_KEY = "compress.method_fields"
_SCALARS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class FieldFlag:
    """One derived option: the config field it sets, in which methods, and how the CLI types it."""

    name: str  # the field name, also the click parameter name
    annotation: Any  # the type the option parses to (None-able)
    methods: tuple[str, ...]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its text in the `Attributes:` section of `cls`'s docstring (Google style;
    `a, b: text` and `a / b: text` document both)."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.split("\n")
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:") + 1
    except StopIteration:
        return {}
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in lines[start:]:
        if line and not line.startswith(" "):  # the next section
            break
        m = re.match(r"^ {4}([a-z_][a-z0-9_]*(?: *[,/] *[a-z_][a-z0-9_]*)*):\s*(.*)$", line)
        if m:
            names = [n.strip() for n in re.split(r"[,/]", m.group(1))]
            for n in names:
                docs[n] = m.group(2).strip()
        elif line.strip() and names:
            for n in names:
                docs[n] = f"{docs[n]} {line.strip()}"
    return docs


def _cli_type(tp: Any) -> Any | None:
    """The option type for a field type, None where a flag cannot express it (sections, mappings)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        kinds = {_cli_type(a) for a in args}
        if len(kinds) == 1:
            return kinds.pop()
        if kinds <= {str, bool}:  # e.g. `str | bool`: the text is read by the config
            return str
        return None
    if origin is Literal:
        values = get_args(tp)
        return tp if all(isinstance(v, str) for v in values) else None
    if origin is list:
        (item,) = get_args(tp) or (str,)
        # numbers are read as text so that 1,2,3 works as well as a repeated flag (see `apply_fields`)
        return list[str] if item in _SCALARS and item is not bool else None
    return tp if tp in _SCALARS else None


def _default_text(f: dataclasses.Field) -> str | None:
    if f.default is dataclasses.MISSING or f.default is None or isinstance(f.default, bool):
        return None
    return str(f.default)


@cache
def method_flags(technique: str, exclude: frozenset[str] = frozenset()) -> tuple[FieldFlag, ...]:
    """The options of every method of `technique`, one per field name (fields in `exclude` are the
    command's own options)."""
    from compress.methods import get_method, method_names

    seen: dict[str, dict[str, Any]] = {}
    for method in method_names(technique):
        cls = get_method(technique, method).config
        hints = get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if not f.init or f.name in exclude:
                continue
            tp = _cli_type(hints[f.name])
            if tp is None:
                continue
            entry = seen.setdefault(f.name, {"types": set(), "methods": [], "help": "", "defaults": set()})
            entry["types"].add(tp)
            entry["methods"].append(method)
            entry["help"] = entry["help"] or docs.get(f.name, "")
            entry["defaults"].add(_default_text(f))
    flags = []
    for name, entry in sorted(seen.items()):
        tps = entry["types"]
        tp = tps.pop() if len(tps) == 1 else str  # a name typed differently by two methods: read as text
        help_text = f"{', '.join(entry['methods'])}: {entry['help']}".rstrip()
        if len(entry["defaults"]) == 1 and None not in entry["defaults"]:
            help_text += f" (default {entry['defaults'].pop()})"
        flags.append(FieldFlag(name, tp, tuple(entry["methods"]), help_text))
    return tuple(flags)


def _option(flag: FieldFlag) -> inspect.Parameter:
    decl = [f"{flag.flag}/--no-{flag.flag[2:]}"] if flag.annotation is bool else [flag.flag]
    annotation = flag.annotation
    repeatable = get_origin(annotation) is list
    default = typer.Option(
        None,
        *decl,
        help=f"{flag.help} Repeatable." if repeatable else flag.help,
        metavar=get_args(annotation)[0].__name__.upper() if repeatable else None,
        rich_help_panel=PANEL,
        show_default=False,
    )
    if get_origin(annotation) is Literal:  # choices as a str Enum, which every Typer version reads
        annotation = enum.Enum(flag.name, [(v, v) for v in get_args(annotation)], type=str)
    return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation | None)


def _plain(value: Any) -> Any:
    """Click's value as config data: a tuple of a repeatable option as a list, a choice as its text."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value] or None
    return value.value if isinstance(value, enum.Enum) else value


@cache
def _click_params(technique: str, exclude: frozenset[str]) -> tuple[Any, ...]:
    """Click parameters for the derived options, converted by Typer itself from a signature."""
    flags = method_flags(technique, exclude)

    def collect(**kwargs: Any) -> None:  # never called: only its signature is converted
        return None

    collect.__signature__ = inspect.Signature([_option(f) for f in flags])  # type: ignore[attr-defined]
    app = typer.Typer(add_completion=False)
    app.command()(collect)
    return tuple(typer.main.get_command(app).params)


def method_command(technique: str, *, covered: tuple[str, ...] = ()) -> type[TyperCommand]:
    """A Typer command class that adds `technique`'s derived options to the command's own.

    The command's own options are not derived again; nor are the fields named in `covered`, which
    its own options set (distill's --layers sets `teacher_layer` or `teacher_layers`).
    """

    class MethodCommand(TyperCommand):
        def _own(self) -> frozenset[str]:
            return frozenset(p.name for p in self.params if p.name) | frozenset(covered)

        def get_params(self, ctx: Any) -> list[Any]:
            params = super().get_params(ctx)
            help_options = [p for p in params if p.name == "help"]
            rest = [p for p in params if p.name != "help"]
            return [*rest, *_click_params(technique, self._own()), *help_options]

        def invoke(self, ctx: Any) -> Any:
            own = self._own()
            given: dict[str, Any] = {}
            for name in list(ctx.params):
                if name not in own:
                    value = _plain(ctx.params.pop(name))
                    if value is not None:
                        given[name] = value
            ctx.meta[_META_KEY] = given
            return super().invoke(ctx)

    MethodCommand.__name__ = f"{technique.title()}Command"
    return MethodCommand


def given_fields(ctx: Any) -> dict[str, Any]:
    """The derived options given on this command line (`ctx`: the command's `typer.Context`):
    field name -> value."""
    return dict(ctx.meta.get(_META_KEY, {}))


def apply_fields(technique: str, method: str, config_cls: type, params: dict[str, Any], given: dict[str, Any]) -> None:
    """Put the given derived options into `params` (the method's config mapping); a flag the method's
    config lacks is an error that names the flags it has."""
    from compress.errors import RecipeError

    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    hints = get_type_hints(config_cls)
    for name, value in given.items():
        if name not in fields:
            own = [f.flag for f in method_flags(technique) if method in f.methods]
            raise RecipeError(
                f"--{name.replace('_', '-')} does not apply to {technique} method '{method}'; "
                f"its options: {', '.join(own) or '(none)'}"
            )
        if isinstance(value, list):
            value = _split(value, hints[name], fields[name])
        elif isinstance(value, str) and _bare(hints[name]) is bool:  # a flag typed as text by another method
            value = _truth(value, f"--{name.replace('_', '-')}", f"{technique} method '{method}'")
        params[name] = value


def _bare(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _truth(text: str, flag: str, where: str) -> bool:
    from compress.errors import RecipeError

    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    if text.lower() not in words:
        raise RecipeError(f"{flag}: {where} takes true or false, got '{text}'")
    return words[text.lower()]


def _split(values: list[str], tp: Any, f: dataclasses.Field) -> list[Any]:
    """A list option's values: numbers, or a field whose metadata sets `cli_sep` (N:M levels), may
    also be written comma-separated; numbers are converted to the field's item type."""
    from compress.errors import RecipeError

    if get_origin(tp) in (Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
    (item,) = get_args(tp) or (str,)
    sep = "," if item in (int, float) else f.metadata.get("cli_sep")
    parts = [p.strip() for v in values for p in (v.split(sep) if sep else [v])]
    if item in (int, float):
        try:
            return [item(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _parses(item, p))
            raise RecipeError(f"--{f.name.replace('_', '-')}: '{bad}' is not a number ({item.__name__})") from None
    return parts


def _parses(item: type, text: str) -> bool:
    try:
        item(text)
    except ValueError:
        return False
    return True


def method_config(
    ctx: Any,
    technique: str,
    method: str,
    config_file: Any,
    *,
    strict: dict[str, Any],
    loose: dict[str, Any],
    extra: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> Any:
    """The chosen method's config from a command line: `--config FILE.yaml`, then the derived
    options, then the common training options (`route_shared`), then `extra` (set by the command's
    own options), then `defaults` where the config has that field and nothing set it."""
    from compress.cli.runs import load_yaml_params
    from compress.config import from_dict
    from compress.errors import RecipeError
    from compress.methods import get_method

    cls = get_method(technique, method).config
    params = load_yaml_params(config_file)
    apply_fields(technique, method, cls, params, given_fields(ctx))
    homeless = route_shared(cls, params, strict=strict, loose=loose)
    if homeless:
        raise RecipeError(f"--{homeless[0].replace('_', '-')} does not apply to {technique} method '{method}'")
    params.update(extra or {})
    for name, value in (defaults or {}).items():
        if name in cls.__dataclass_fields__:
            params.setdefault(name, value)
    where = str(config_file) if config_file else f"{technique} {method} options"
    return from_dict(cls, params, where=where)


def route_shared(
    config_cls: type, params: dict[str, Any], *, strict: dict[str, Any], loose: dict[str, Any]
) -> list[str]:
    """Common training options (--epochs, --lr, ...) into the method's config: its own field of that
    name, else its first training section (a field typed TrainConfig: `train` or `finetune`).

    `strict` options are an error where neither exists; `loose` ones (--seed, --calib-size, which
    also set the data) are then skipped. Returns the names of the strict options that found no home.
    """
    hints = get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls) if f.init]
    section = next((n for n in names if _is_train_config(hints[n])), None)
    homeless = []
    for name, value in {**strict, **loose}.items():
        if value is None:
            continue
        if name in names:
            params[name] = value
        elif section is not None:
            sub = dict(params.get(section) or {})
            sub[name] = value
            params[section] = sub
        elif name in strict:
            homeless.append(name)
    return homeless


def _is_train_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__name__ == "TrainConfig"
