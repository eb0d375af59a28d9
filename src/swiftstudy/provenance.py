"""What produced a result: package and library versions, the git commit, the time, the machine.

Every result folder records this beside its resolved config, so a run can be replayed and
compared; every timing names the machine it was measured on (:func:`describe_machine`).
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: The vector extensions a timing depends on: (``/proc/cpuinfo`` flag, the name printed). The
#: matrix kernels torch picks differ by them, so CPU timings are only comparable when they agree.
VECTOR_EXTENSIONS = (
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_bf16", "AVX-512-BF16"),
    ("amx_tile", "AMX"),
    ("asimd", "NEON"),
    ("sve", "SVE"),
)
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuDescription:
    """The processor a timing ran on.

    Attributes:
        model: The CPU model name (``/proc/cpuinfo``'s ``model name``), or the platform's guess.
        cpus: Logical CPUs.
        extensions: The :data:`VECTOR_EXTENSIONS` it has, by their printed names.
    """

    model: str
    cpus: int
    extensions: tuple[str, ...]


def parse_cpuinfo(text: str) -> CpuDescription:
    """The CPU model, logical CPU count and vector extensions in a ``/proc/cpuinfo`` text.

    x86 lists extensions under ``flags``, ARM under ``Features``; only the first processor's are
    read (all processors of one machine share them).
    """
    model, flags, cpus = "", set(), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "processor":
            cpus += 1
        elif key == "model name" and not model:
            model = " ".join(value.split())
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    extensions = tuple(name for flag, name in VECTOR_EXTENSIONS if flag in flags)
    return CpuDescription(model or platform.processor() or platform.machine(), cpus, extensions)


def describe_cpu() -> CpuDescription:
    """This machine's processor, from ``/proc/cpuinfo`` where there is one (Linux)."""
    try:
        found = parse_cpuinfo(_CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        found = CpuDescription(platform.processor() or platform.machine(), 0, ())
    return CpuDescription(found.model, os.cpu_count() or found.cpus, found.extensions)


def describe_machine(threads: int | None = None) -> str:
    """One line naming the machine of a timing: CPU model, CPUs, vector extensions, torch threads.

    Args:
        threads: The torch threads the timed work used; torch's current setting if ``None``.

    Example: ``AMD EPYC, 2 CPUs, AVX2 (no AVX-512, no AMX); torch 2.13.0+cpu, 2 threads``.
    """
    import torch

    cpu = describe_cpu()
    has = ", ".join(cpu.extensions) or "no vector extensions listed"
    # On x86, saying what is absent matters as much: AVX-512 and AMX change torch's kernels.
    missing = [f"no {name}" for name in ("AVX-512", "AMX") if name not in cpu.extensions]
    if missing and platform.machine().lower() in ("x86_64", "amd64"):
        has += f" ({', '.join(missing)})"
    threads = torch.get_num_threads() if threads is None else threads
    return f"{cpu.model}, {cpu.cpus} CPUs, {has}; torch {torch.__version__}, {threads} threads"


def package_version() -> str:
    """The installed swiftstudy version (read from the package metadata, not from ``__init__``,
    so this module stays below the package's top level)."""
    try:
        return version("swiftstudy")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def git_sha(source: Path | None = None) -> str | None:
    """The commit of the git checkout that ``source`` (this file by default) is tracked in.

    ``None`` when git is missing or the file is not tracked: an installed package that merely
    sits inside someone else's repository (a virtual environment in a project) has no commit.
    """
    source = Path(__file__).resolve() if source is None else source.resolve()
    git = ["git", "-C", str(source.parent)]
    try:
        subprocess.run(
            [*git, "ls-files", "--error-unmatch", source.name],
            capture_output=True,
            timeout=5,
            check=True,
        )
        out = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe_provenance(command: str | None) -> dict:
    """The command, versions, git commit and UTC time, as plain YAML-ready values."""
    import peft
    import torch
    import transformers

    return {
        "command": command,
        "swiftstudy_version": package_version(),
        "git_sha": git_sha(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
    }
