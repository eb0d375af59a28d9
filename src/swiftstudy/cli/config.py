"""Command-line pieces the commands share: a spec command's arguments, flags drawn from a spec."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from swiftstudy.config.spec import default_text, describe_spec, spec_options


def add_spec_arguments(
    parser: argparse.ArgumentParser,
    command: str,
    spec: str,
    out: str,
    example: str,
    flags: dict[str, str],
) -> None:
    """A spec command's arguments: the spec, ``--out``, the overrides, flags, ``--print-config``.

    ``spec`` is the spec's ``module:Class``; ``flags`` are the command's ``store_true`` flags
    (flag → help, in order), ``--no-progress`` among them.
    """
    parser.add_argument("spec", help=f"the {command} spec (YAML)")
    parser.add_argument("--out", required=True, help=out)
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help=f"override spec keys, e.g. {example}"
    )
    for flag, text in flags.items():
        parser.add_argument(flag, action="store_true", help=text)
    add_print_config(parser, spec)


def run_from_spec(
    function: Callable[..., Any], args: argparse.Namespace, command: str, **kw: Any
) -> Any:
    """Call a spec command's ``function(spec, out, overrides=, progress=, command=, **kw)``."""
    progress = not args.no_progress
    return function(
        args.spec, args.out, overrides=args.overrides, progress=progress, command=command, **kw
    )


def add_print_config(parser: argparse.ArgumentParser, spec: str, name_key: str = "") -> None:
    """``--print-config``: print every key of ``spec`` with its default and doc, then exit.

    Args:
        parser: The command's parser.
        spec: ``module:Class`` of the spec, imported only when the flag is given.
        name_key: ``module:function`` naming each key (default: the dotted key).
    """
    parser.add_argument(
        "--print-config",
        action=_PrintConfig,
        spec=spec,
        name_key=name_key,
        help="print every spec key with its default and doc, then exit",
    )


class _PrintConfig(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, spec: str, name_key: str, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)
        self.spec = spec
        self.name_key = name_key

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        names = [_load(self.name_key)] if self.name_key else []
        print(describe_spec(_load(self.spec), *names))
        parser.exit()


def add_spec_flags(parser: argparse.ArgumentParser, cls: type, flag_name: Any) -> list[str]:
    """One flag per key of ``cls``; a section's keys (a generator's) go in a group of their own.

    Every flag defaults to None, so that only the flags given reach the spec; a key in several
    sections is one flag. Returns the flags' destinations (the keys).
    """
    sections: dict[str, list[tuple[str, Any, Any]]] = {}
    dests = []
    for key, f, o in spec_options(cls):
        if o.check is not None and o.check.spec is not None:
            for sub_key, sub_f, sub_o in spec_options(o.check.spec):
                sections.setdefault(sub_key, []).append((key, sub_f, sub_o))
            continue
        default = default_text(f, o)
        _add(parser, flag_name((key,)), key, o, _help(o.doc, default), default == "(required)")
        dests.append(key)
    groups: dict[tuple[str, ...], Any] = {}
    for key, owners in sections.items():
        names = tuple(name for name, _, _ in owners)
        if names not in groups:
            title = " and ".join(names) + (" generators" if len(names) > 1 else " generator")
            groups[names] = parser.add_argument_group(title)
        helps = [
            (f"{name}: " if len(names) > 1 else "") + _help(o.doc, default_text(f, o))
            for name, f, o in owners
        ]
        _add(groups[names], flag_name((names[0], key)), key, owners[0][2], "; ".join(helps), False)
        dests.append(key)
    return dests


def _add(group: Any, flag: str, dest: str, o: Any, text: str, required: bool) -> None:
    check = o.check
    group.add_argument(
        flag,
        dest=dest,
        required=required,
        type=check.parse,
        choices=check.choices or None,
        help=text.replace("%", "%%"),
    )


def _help(doc: str, default: str) -> str:
    return doc if default in ("", "null", "(required)") else f"{doc} (default {default})"


def _load(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
