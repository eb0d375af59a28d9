"""What produced a result: package and library versions, the git commit, the time.

Every result folder records this beside its resolved config, so a run can be replayed and
compared.
"""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path


def git_sha() -> str | None:
    """The commit of the swiftstudy source tree, or ``None`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe_provenance(command: str | None) -> dict:
    """The command, versions, git commit and UTC time, as plain YAML-ready values."""
    import peft
    import torch
    import transformers

    from swiftstudy import __version__

    return {
        "command": command,
        "swiftstudy_version": __version__,
        "git_sha": git_sha(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "transformers_version": transformers.__version__,
        "peft_version": peft.__version__,
    }
