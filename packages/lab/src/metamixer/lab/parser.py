"""The command line's parser: one ``error:`` line per configuration error, full option names only,
and dict options that merge nested updates."""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import yaml
from jsonargparse._typehints import ActionTypeHint
from lightning.pytorch.cli import LightningArgumentParser

_QUOTES = ("'", '"')
_UNIONS = (typing.Union, types.UnionType)
_NESTED = re.compile(r"NestedArg\(key='([^']*)', val=(.*)\)$")
_SKIP = ("Does not validate against any of the", "Subtypes:", "Errors:", "Given value type:",
         "Problem with given class_path")  # fmt: skip


def _plain_type(text: str) -> str:
    """``<class 'int'>`` -> ``int``; ``typing.Literal['a', 'b']`` -> ``one of a, b``."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text)
    return re.sub(
        r"typing\.Literal\[(.*)\]$",
        lambda m: "one of " + ", ".join(v.strip(" '\"") for v in m[1].split(",")),
        text,
    )


def condense_parser_error(
    message: str, mapping_keys: Callable[[str], list[str] | None] = lambda key: None
) -> str:
    """jsonargparse's error (nested "Does not validate against any of the Union subtypes" dumps) as
    one line: the option's full key, what was given and what it takes, e.g. ``trainer.max_epochs:
    got 'many'; expected int``.  ``mapping_keys(key)``: the keys a typed-dict option takes (named
    after an unknown one), or ``None``."""
    keys: list[str] = []
    leaves: list[str] = []
    expected: list[str] = []
    given, unknown_key = None, False
    for raw in message.splitlines():
        line = raw.strip().removeprefix("- ").strip()
        found = re.match(r'Parser key "([^"]+)":\s*(.*)$', line)
        if found:
            if keys[-1:] != [found[1]]:
                keys.append(found[1])
            line = found[2]
        if not line or line.startswith(_SKIP) or line == "Expected a <class 'NoneType'>":
            continue
        if line.startswith("Given value:"):
            value = line.removeprefix("Given value:").strip()
            nested = _NESTED.match(value)
            if nested:
                if keys[-1:] != [nested[1]] and not unknown_key:
                    keys.append(nested[1])
                value = nested[2]
            if given is None and not value.startswith(("Namespace(", "{")):
                given = value
            continue
        wanted = re.match(r"Expected a (.*?)(?:\. Got value: (.*))?$", line)
        if wanted:
            expected.append(_plain_type(wanted[1]))
            given = given if wanted[2] is None else wanted[2]
            continue
        unknown = re.match(r"Unexpected keys: \{(.*?)\}(?:\. Got value: .*)?$", line)
        if unknown:
            unknown_key, valid = True, mapping_keys(".".join(keys))
            line = f"unknown key {unknown[1]}" + (f"; valid: {', '.join(valid)}" if valid else "")
        leaves.append(line)
    parts = list(dict.fromkeys(leaves))
    got = "" if given is None else f"got {given if given.startswith(_QUOTES) else repr(given)}; "
    if any(e.startswith("dot import path") for e in expected):
        parts.append(f"no class {given!r}; --help lists the choices")
    elif expected and not unknown_key:
        choices = [c for e in expected if e.startswith("one of ") for c in e[7:].split(", ")]
        others = [e for e in expected if not e.startswith("one of ")]
        if choices:
            others.append("one of " + ", ".join(dict.fromkeys(choices)))
        parts.append(got + "expected " + " or ".join(dict.fromkeys(others)))
    text = "; ".join(parts) or " ".join(message.split())
    return f"{'.'.join(keys)}: {text}" if keys else text


def _typed_dict_keys(parser: Any, key: str) -> list[str] | None:
    """The keys of the ``TypedDict`` that option ``key`` of ``parser`` takes, if it takes one."""
    for action in getattr(parser, "_actions", ()):
        if action.dest == key:
            hint = getattr(action, "_typehint", None)
            for option in (hint, *typing.get_args(hint)):
                if typing.is_typeddict(option):
                    return list(typing.get_type_hints(option))
    return None


def _key_of_a_mapping_option(parser: Any, option: str) -> str | None:
    """``--a.b.KEY`` for an unknown ``--a.KEY`` where ``KEY`` is a key of the ``TypedDict`` option
    ``--a.b`` (a setting that moved into ``arch_args`` / ``detector_args``)."""
    head, _, key = option.removeprefix("--").rpartition(".")
    for action in getattr(parser, "_actions", ()):
        if action.dest.rpartition(".")[0] == head and key in (
            _typed_dict_keys(parser, action.dest) or ()
        ):
            return f"--{action.dest}.{key}"
    return None


def _is_mapping_hint(hint: Any) -> bool:
    """Whether ``hint`` (or a member of its union) is a dict / mapping / ``TypedDict`` type."""
    options = (hint, *typing.get_args(hint)) if typing.get_origin(hint) in _UNIONS else (hint,)
    return any(
        typing.is_typeddict(o) or typing.get_origin(o) in (dict, Mapping) or o in (dict, Mapping)
        for o in options
    )


def _merged(base: Any, path: list[str], value: Any) -> dict[str, Any]:
    """A copy of mapping ``base`` (``{}`` if it is none) with ``value`` set at the key ``path``,
    every mapping on the way copied and kept."""
    merged = dict(base) if isinstance(base, Mapping) else {}
    merged[path[0]] = value if len(path) == 1 else _merged(merged.get(path[0]), path[1:], value)
    return merged


class MergingTypeHint(ActionTypeHint):
    """A typed option whose dict value takes ``--OPTION.a.b.c VALUE`` as an update of key
    ``a.b.c``: every other key, at every depth, keeps its value from the config files (jsonargparse
    merges one level only and replaces the dict below it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 4 and isinstance(args[3], str):
            parser, cfg, value, option = args
            base = self.get_option_string_base(option)
            path = option[len(base) + 1 :].removeprefix("init_args.").split(".") if base else []
            if len(path) > 1:
                previous = cfg.get(self.dest)
                first = previous.get(path[0]) if isinstance(previous, Mapping) else None
                leaf = yaml.safe_load(value) if isinstance(value, str) else value
                args = (parser, cfg, _merged(first, path[1:], leaf), f"{base}.{path[0]}")
        return super().__call__(*args, **kwargs)


class MetaMixerArgumentParser(LightningArgumentParser):
    """The CLI's parser: a configuration error is one ``error:`` line naming the option, the value
    and what it takes (jsonargparse's full message with ``METAMIXER_DEBUG=1``); an option is only
    recognised by its full name (argparse's prefix matching is off, so ``--trainer.max_epoch`` is
    an error, not ``max_epochs``); dict options merge nested updates (``MergingTypeHint``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> Any:
        action = super().add_argument(*args, **kwargs)
        if type(action) is ActionTypeHint and _is_mapping_hint(action._typehint):
            action.__class__ = MergingTypeHint
        return action

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if os.environ.get("METAMIXER_DEBUG") or not self.exit_on_error:
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        line = condense_parser_error(message, lambda key: _typed_dict_keys(parser, key))
        unknown = re.match(r"unrecognized arguments: (--[^\s=]+)", message)
        if unknown:
            options = [o for a in parser._actions for o in a.option_strings]
            close = difflib.get_close_matches(unknown[1], options, n=1)
            moved = _key_of_a_mapping_option(parser, unknown[1])
            if moved:  # e.g. a setting that now lives in --model.detector_args
                close = [moved]
            line += f"; did you mean {close[0]}?" if close else ""
        prog = parser.prog.replace(" [options]", "").split(" ")
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if prog[0] == "__main__.py" and spec is not None:  # python -m PACKAGE
            prog[0] = f"python -m {spec.name.removesuffix('.__main__')}"
        sys.stderr.write(f"error: {line} ({' '.join(prog)} --help lists the options)\n")
        raise SystemExit(2)


def cause_in_union(err: BaseException) -> BaseException:
    """The error a class raised while jsonargparse built it, out of its "Does not validate against
    any of the Union subtypes" wrapper (named by the class), or ``err`` itself."""
    root = err
    while str(root).startswith(_SKIP[0]) and root.__cause__ is not None:
        root = root.__cause__
    if root is err:
        return err
    found = re.search(r"class_path='(?:[\w.]+\.)?(\w+)'", str(err))
    if found and type(root) in (ValueError, FileNotFoundError, TypeError):
        return type(root)(f"{found[1]}: {root}")
    return root
