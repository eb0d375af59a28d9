"""The run folder every command writes into, the one atomic write and the one SHA-256 helper."""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from swiftstudy.errors import InputError
from swiftstudy.fileio import sha256_hex, write_atomic, write_temporary, write_text_atomic
from swiftstudy.model import Checkpoint, hash_checkpoint
from swiftstudy.provenance import git_sha, package_version
from swiftstudy.rundir import (
    check_folder,
    claim_run_folder,
    differing_keys,
    hash_input,
    hash_inputs,
    save_run_config,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "swiftstudy"


def _saved(folder: Path, config: dict, name: str = "config.yaml") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(config), encoding="utf-8")


# -- claiming the folder --------------------------------------------------------------------


def test_a_new_or_empty_folder_is_claimed(tmp_path):
    current = {"spec": {"lr": 0.1}}
    assert claim_run_folder(tmp_path / "new", "c.yaml", current, what="x", overwrite=False) is None
    (tmp_path / "empty").mkdir()
    claimed = claim_run_folder(
        tmp_path / "empty", "c.yaml", current, what="x", overwrite=False, require_config=True
    )
    assert claimed is None


def test_a_folder_of_the_same_run_returns_its_saved_config(tmp_path):
    _saved(tmp_path, {"spec": {"lr": 0.1, "cache_dir": "/a"}, "created": "then"})
    saved = claim_run_folder(
        tmp_path,
        "config.yaml",
        {"spec": {"lr": 0.1, "cache_dir": "/b"}},
        what="study",
        overwrite=False,
        ignore=("cache_dir",),
    )
    assert saved == {"spec": {"lr": 0.1, "cache_dir": "/a"}, "created": "then"}


def test_a_different_config_is_refused_naming_the_keys_unless_overwrite(tmp_path):
    _saved(tmp_path, {"spec": {"lr": 0.1, "seed": 1, "old": True}, "data_sha256": ["aa"]})
    current = {"spec": {"lr": 0.2, "seed": 1, "new": 3}, "data_sha256": ["bb"]}
    with pytest.raises(InputError) as caught:
        claim_run_folder(tmp_path, "config.yaml", current, what="train", overwrite=False)
    message = str(caught.value)
    assert caught.value.key == "--out" and str(tmp_path) in message
    assert (
        "holds a run of a different train config (lr, new, old, the contents of data); "
        "use another --out, or --overwrite to replace it"
    ) in message
    assert claim_run_folder(tmp_path, "config.yaml", current, what="t", overwrite=True) is None
    assert (tmp_path / "config.yaml").is_file()  # overwriting is the caller's job


def test_a_saved_config_without_a_spec_is_a_different_config(tmp_path):
    (tmp_path / "config.yaml").write_text("just text\n")
    with pytest.raises(InputError, match=r"different study config \(spec\)"):
        claim_run_folder(tmp_path, "config.yaml", {"spec": {}}, what="study", overwrite=False)


def test_foreign_files_are_refused_only_when_a_config_is_required(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    current = {"spec": {}}
    assert claim_run_folder(tmp_path, "c.yaml", current, what="study", overwrite=False) is None
    with pytest.raises(InputError, match=r"is not empty and has no c\.yaml; use another --out"):
        claim_run_folder(
            tmp_path, "c.yaml", current, what="train", overwrite=False, require_config=True
        )
    claimed = claim_run_folder(
        tmp_path, "c.yaml", current, what="train", overwrite=True, require_config=True
    )
    assert claimed is None


def test_a_file_is_not_a_folder(tmp_path):
    out = tmp_path / "out"
    out.write_text("")
    with pytest.raises(InputError, match="exists and is not a folder") as caught:
        check_folder(out)
    assert caught.value.key == "--out"
    with pytest.raises(InputError, match="exists and is not a folder"):
        claim_run_folder(out, "c.yaml", {"spec": {}}, what="study", overwrite=True)


def test_differing_keys_ignores_unchanged_and_ignored_keys():
    saved = {"spec": {"a": 1, "b": 2}, "eval_sha256": "x", "other": 1}
    assert differing_keys(saved, {"spec": {"a": 1, "b": 3}}, ignore=("b",)) == []
    assert differing_keys(saved, {"spec": {"a": 1, "b": 2}, "eval_sha256": "y", "other": 2}) == [
        "the contents of eval",
        "other",
    ]


# -- the saved config -----------------------------------------------------------------------


def test_the_config_carries_version_git_sha_and_input_hashes(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    inputs = hash_inputs([data, data, "owner/hub-dataset"])
    path = tmp_path / "run" / "config.yaml"
    written = save_run_config(path, {"spec": {"lr": 0.1}}, command="swiftstudy x", inputs=inputs)
    saved = yaml.safe_load(path.read_text())
    assert saved == written
    assert saved["spec"] == {"lr": 0.1} and saved["command"] == "swiftstudy x"
    assert saved["swiftstudy_version"] == version("swiftstudy")
    assert saved["git_sha"] == git_sha()
    assert saved["input_sha256"] == {str(data): hash_input(data), "owner/hub-dataset": None}
    assert {"created", "torch_version", "transformers_version", "peft_version"} <= set(saved)
    assert not [p for p in path.parent.iterdir() if p.name != "config.yaml"]


def test_a_nested_config_keeps_provenance_apart(tmp_path):
    path = tmp_path / "probes.config.yaml"
    save_run_config(path, {"input": {"sha256": None}}, command=None, nested=True)
    saved = yaml.safe_load(path.read_text())
    assert set(saved) == {"input", "provenance"}
    assert saved["provenance"]["command"] is None and "input_sha256" not in saved["provenance"]
    assert {"git_sha", "swiftstudy_version"} <= set(saved["provenance"])


def test_git_sha_names_the_checkout_only_for_a_tracked_file(tmp_path):
    head = subprocess.run(
        ["git", "-C", str(SRC), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    assert git_sha() == (head.stdout.strip() if head.returncode == 0 else None)
    repo = tmp_path / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    installed = repo / "venv" / "provenance.py"  # a package installed inside another repository
    installed.parent.mkdir()
    installed.write_text("")
    assert git_sha(installed) is None
    tracked = repo / "tracked.py"
    tracked.write_text("")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    git += ["-c", "commit.gpgsign=false"]
    subprocess.run([*git, "add", "tracked.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert git_sha(tracked) == sha.stdout.strip() and len(sha.stdout.strip()) == 40


def test_the_version_comes_from_the_metadata_not_the_package_top():
    assert package_version() == version("swiftstudy")
    tree = ast.parse((SRC / "provenance.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "swiftstudy" not in imported and not any(m.startswith("swiftstudy") for m in imported)


# -- hashes ---------------------------------------------------------------------------------


def test_sha256_hex_streams_files_and_joins_parts(tmp_path):
    big = tmp_path / "big.bin"
    payload = os.urandom(3 * (1 << 20) + 17)  # several read chunks
    big.write_bytes(payload)
    assert sha256_hex(big) == hashlib.sha256(payload).hexdigest()
    expected = hashlib.sha256(b"name\0" + "é".encode() + payload).hexdigest()
    assert sha256_hex(b"name\0", "é", big) == expected
    assert sha256_hex() == hashlib.sha256().hexdigest()


def test_stored_digests_are_unchanged(tmp_path):
    # Reference values from the implementations this helper replaced (train.outputs.hash_data
    # and model.hash_checkpoint): run folders and caches written before stay valid.
    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"prompt": "a", "response": "b"}\n')
    assert hash_input(data) == "3e7b074494f26a48e40cb7757d39a07a50f8255c1ca314cf9820f09e470935af"
    folder = tmp_path / "ds"
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "data.arrow").write_bytes(b"\x00\x01rows")
    (folder / "dataset_dict.json").write_text('{"splits": ["train"]}')
    assert hash_input(folder) == "c9eb1c8fbe6546864ff147bc2389818017971c5c9f84ef51f6e56de24822476a"
    adapter = tmp_path / "checkpoint-1"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 2}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights" * 3)
    assert (
        hash_checkpoint(Checkpoint(adapter, 1, "adapter"))
        == "ad6c217def82e63b91550637402a093d1e5f084360a5216380e04b8bd7a685b0"
    )


# -- the atomic write -----------------------------------------------------------------------


def test_atomic_write_replaces_the_file_with_shareable_permissions(tmp_path):
    path = tmp_path / "sub" / "result.csv"
    write_text_atomic(path, "a,b\r\n1,é\n")
    assert path.read_bytes() == "a,b\r\n1,é\n".encode()
    write_atomic(path, b"\x00new")
    assert path.read_bytes() == b"\x00new"
    write_atomic(path, lambda handle: handle.write(b"streamed"))
    assert path.read_bytes() == b"streamed"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.csv"]


def test_a_writer_that_raises_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.csv"
    path.write_text("old\n")

    def writer(handle):
        handle.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_atomic(path, writer)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]
    with pytest.raises(RuntimeError):
        write_atomic(tmp_path / "never.csv", writer)
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "result.csv"
    path.write_text("old\n")

    def refuse(src, dst):
        raise OSError("read-only")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="read-only"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["result.csv"]


def test_a_temporary_waits_beside_its_target_until_renamed(tmp_path):
    path = tmp_path / "row.safetensors"
    tmp = write_temporary(path, b"row", fsync=False)
    assert tmp.parent == tmp_path and tmp.name.startswith(".row.safetensors.")
    assert not path.exists() and tmp.read_bytes() == b"row"
    os.replace(tmp, path)
    assert path.read_bytes() == b"row" and list(tmp_path.iterdir()) == [path]
