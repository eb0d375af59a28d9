"""A command's run folder: claim it or refuse a different config, and save the resolved config.

``study``, ``train`` and ``validate`` write into a folder (``--out``), ``probes`` beside its output
file; each records what made its results in a YAML file there: the resolved config, the SHA-256 of
the data files it names (``input_sha256``) and provenance (command, versions, git SHA, time). A
rerun into a folder that holds a run of a different config is refused unless the caller
overwrites it, so results of two configs never mix (as kronfluence's ``_save_arguments``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from swiftstudy.config.yamlio import dump_yaml, load_yaml
from swiftstudy.errors import InputError
from swiftstudy.fileio import sha256_hex, write_text_atomic
from swiftstudy.provenance import describe_provenance


def check_folder(folder: Path) -> None:
    """Refuse an ``--out`` that exists and is not a folder."""
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder", path=folder, key="--out")


def claim_run_folder(
    folder: Path,
    config_name: str,
    current: Mapping[str, Any],
    *,
    what: str,
    overwrite: bool,
    ignore: Collection[str] = (),
    require_config: bool = False,
) -> dict[str, Any] | None:
    """Refuse to mix runs in ``folder``; return the saved config of the same run, if there is one.

    A run is identified by its config's ``spec`` (each key but ``ignore``) and by any other
    top-level entry of ``current``, such as ``data_sha256``.

    Args:
        folder: The run folder (it may not exist yet).
        config_name: The file in ``folder`` that holds the saved config.
        current: This run's identity, laid out as its saved config is: ``{"spec": {...}, ...}``.
        what: The command, for the error: ``holds a run of a different <what> config``.
        overwrite: Accept whatever the folder holds (the caller replaces it).
        ignore: Spec keys that do not change the results (where a cache lives, say).
        require_config: Refuse a folder that holds files but no ``config_name``.

    Returns:
        The saved config when ``folder`` holds a run of the same identity, else ``None`` (a
        new, empty or overwritten folder, or one without the config file).

    Raises:
        InputError: ``folder`` is a file, holds a run of another identity, or (with
            ``require_config``) holds other files; the error names the differing keys.
    """
    check_folder(folder)
    config = folder / config_name
    if overwrite or not config.is_file():
        if require_config and not overwrite and folder.is_dir() and any(folder.iterdir()):
            raise InputError(
                f"is not empty and has no {config_name}; use another --out or --overwrite",
                path=folder,
                key="--out",
            )
        return None
    saved, _ = load_yaml(config)
    saved = saved if isinstance(saved, dict) else {}
    differing = differing_keys(saved, current, ignore)
    if differing:
        raise InputError(
            f"holds a run of a different {what} config ({', '.join(differing)}); "
            "use another --out, or --overwrite to replace it",
            path=folder,
            key="--out",
        )
    return saved


def differing_keys(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Collection[str] = ()
) -> list[str]:
    """What differs between two run identities: spec keys by name, an input hash ``<x>_sha256``
    as ``the contents of <x>``, other entries by their key."""
    differing = []
    for key, value in current.items():
        if key == "spec":
            differing += _differing_spec_keys(saved.get("spec"), value, ignore)
        elif saved.get(key) != value:
            name = key.removesuffix("_sha256")
            differing.append(f"the contents of {name}" if name != key else key)
    return differing


def _differing_spec_keys(
    saved: object, current: Mapping[str, Any], ignore: Collection[str]
) -> list[str]:
    if not isinstance(saved, dict):
        return ["spec"]
    keys = dict.fromkeys([*current, *saved])
    return [k for k in keys if k not in ignore and saved.get(k) != current.get(k)]


def hash_input(path: str | Path) -> str | None:
    """The SHA-256 of a data file (its name and bytes), or of every file of a dataset folder
    (their relative names and bytes, in name order); ``None`` for a Hub dataset id."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return sha256_hex(f"{path.name}\0", path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sha256_hex(*(part for f in files for part in (f"{f.relative_to(path)}\0", f)))


def hash_inputs(paths: Iterable[str | Path]) -> dict[str, str | None]:
    """:func:`hash_input` of each distinct path, keyed by the path as text."""
    return {str(path): hash_input(path) for path in dict.fromkeys(paths)}


def save_run_config(
    path: Path,
    config: Mapping[str, Any],
    *,
    command: str | None,
    inputs: Mapping[str, str | None] | None = None,
    nested: bool = False,
) -> dict[str, Any]:
    """Write a run's resolved config with its provenance, atomically; return what was written.

    Args:
        path: The config file.
        config: The resolved config (the spec and what the run derived from it).
        command: The command line that started the run (``None`` from Python).
        inputs: The hashes of the data files the config names (:func:`hash_inputs`), saved as
            ``input_sha256``.
        nested: Put the provenance under a ``provenance`` key instead of beside the config.
    """
    provenance = describe_provenance(command)
    if inputs is not None:
        provenance["input_sha256"] = dict(inputs)
    written = {**config, "provenance": provenance} if nested else {**config, **provenance}
    write_text_atomic(path, dump_yaml(written))
    return written
