"""swiftstudy: will a kind of instruction-tuning data help a model? Ask its gradients.

The public API, for notebooks and scripts (the ``swiftstudy`` command calls the same functions)::

    import swiftstudy
    result = swiftstudy.run_study("study.yaml", "results/cot")
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("swiftstudy")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from swiftstudy.errors import InputError
from swiftstudy.study import (
    StudyResult,
    StudySpec,
    load_study_spec,
    run_study,
)
from swiftstudy.train import TrainResult, TrainSpec, load_train_spec, run_training

__all__ = [
    "InputError",
    "StudyResult",
    "StudySpec",
    "TrainResult",
    "TrainSpec",
    "__version__",
    "load_study_spec",
    "load_train_spec",
    "run_study",
    "run_training",
]
