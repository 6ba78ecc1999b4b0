"""Typed ``arch_args`` for the command line: an architecture's knobs as a ``TypedDict``, so that
``--model.arch_args.help <Name>`` lists them with their types and a misspelled knob is refused while
the command line is parsed."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, Union

from metamixer.core import ACTIVATIONS, CHANNEL_MIXERS, TOKEN_MIXERS, MixerSettings
from metamixer.core.architectures import get_architecture


def registered_name(names: list[str]) -> Any:
    """A name: the registered ones are listed as choices; any other registered later (``--import``)
    is accepted here and checked by the registry when the network is built."""
    return Union[Literal[tuple(names)], str]  # noqa: UP007


def _per_stage(name: Any, optional: bool = False) -> Any:
    """One value for every stage or a list with one per stage (entries ``None`` if optional)."""
    item = Union[name, None] if optional else name  # noqa: UP007
    return Union[(name, list[item], *((None,) if optional else ()))]  # type: ignore[valid-type]


def mixer_types() -> dict[str, Any]:
    """The types of ``MixerSettings``' name fields, the registered names as choices."""
    act = registered_name(sorted(ACTIVATIONS))
    return {
        "token_mixers": _per_stage(registered_name(TOKEN_MIXERS.names())),
        "channel_mixers": _per_stage(registered_name(CHANNEL_MIXERS.names())),
        "token_acts": _per_stage(act, optional=True),
        "channel_acts": _per_stage(act, optional=True),
    }


def _knob_types(name: str, types: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Architecture ``name``'s arguments but its task arguments, with their types."""
    entry = get_architecture(name)
    hints = {**typing.get_type_hints(MixerSettings), **typing.get_type_hints(entry.cls.__init__)}
    hints |= {**mixer_types(), **(types or {})}
    return {p: hints.get(p, Any) for p in entry.parameters() if p not in entry.task_args}


def _args_section(classes: Sequence[type]) -> str:
    docs = [inspect.cleandoc(c.__doc__ or "") for c in classes]
    args = "\n".join(d[d.find("Args:") :].removeprefix("Args:") for d in docs if "Args:" in d)
    return f"Args:{args}" if args else ""


def architecture_knobs(name: str, types: Mapping[str, Any] | None = None) -> type:
    """The arguments of architecture ``name``'s class, except its task arguments, as a ``TypedDict``
    (for ``arch_args``): every key optional (an absent one keeps the variant's value), typed by the
    constructor's annotations, the mixer names' choices or ``types``, documented by the class's
    docstring.  The names and defaults stay in the one spec of each variant
    (``metamixer.core.ARCHITECTURES``)."""
    cls = get_architecture(name).cls
    knobs = TypedDict(f"{cls.__name__}Args", _knob_types(name, types), total=False)  # type: ignore[misc]
    knobs.__doc__ = (
        f"{cls.__name__} knobs (an absent one keeps the variant's value)\n\n"
        f"{_args_section([cls, MixerSettings])}"
    )
    knobs.__module__ = cls.__module__
    return knobs


def family_knobs(title: str, names: Sequence[str], exclude: Sequence[str] = ()) -> type:
    """The knobs of several architectures chosen by another option (e.g. the detectors of
    ``--model.detector``) as one ``TypedDict`` named ``title``: the union of their keys, so that
    ``--model.<option>.help <title>`` lists them all and a misspelled key is refused while
    parsing; which keys the chosen one takes is checked by its registry entry."""
    fields: dict[str, Any] = {}
    for name in names:
        fields |= {k: v for k, v in _knob_types(name).items() if k not in exclude}
    knobs = TypedDict(title, fields, total=False)  # type: ignore[misc]
    classes = list(dict.fromkeys(get_architecture(n).cls for n in names))
    knobs.__doc__ = (
        f"{title} (an absent one keeps the chosen spec's value)\n\n{_args_section(classes)}"
    )
    knobs.__module__ = classes[0].__module__
    return knobs
