"""swiftstudy: will a kind of instruction-tuning data help a model? Ask its gradients.

The public API, for notebooks and scripts (the ``swiftstudy`` command calls the same functions)::

    import swiftstudy
    result = swiftstudy.run_study("study.yaml", "results/cot")  # ends by writing its report
    results = swiftstudy.run_studies({"results/cot": "cot.yaml", "results/eval": "eval.yaml"})
    swiftstudy.render_report("results/cot")  # re-render the report from the saved tables
    probes = swiftstudy.build_probes("cot", "refs.jsonl", "cot.jsonl")  # + generator=...
    validation = swiftstudy.run_validation("validate.yaml", "results/validation")
    demo = swiftstudy.run_demo("demo-out")  # data, base run and the three studies, bundled model
    session = swiftstudy.Session("smollm2", "runs/base")  # in a notebook: the model loaded once
    result = session.study(sets={"cot": records, ...}, metrics=[...])  # .scores.to_pandas()
    callback = swiftstudy.SwiftStudyCallback("study.yaml", "results/live")  # Trainer(callbacks=)
"""

from typing import TYPE_CHECKING

from swiftstudy.lazy import lazy_exports
from swiftstudy.provenance import package_version

__version__ = package_version()

#: Each public name and the module it comes from. They are imported on first use, so that
#: ``import swiftstudy.scores`` (or ``swiftstudy.data``) loads no transformers, peft or matplotlib.
_SOURCES = {
    "InputError": "swiftstudy.errors",
    "ProbeFailure": "swiftstudy.probes",
    "ProbesResult": "swiftstudy.probes",
    "ReportFiles": "swiftstudy.report",
    "Session": "swiftstudy.study.session",
    "Strategy": "swiftstudy.data.strategies",
    "StudyResult": "swiftstudy.study",
    "StudySpec": "swiftstudy.study",
    "SwiftStudyCallback": "swiftstudy.study.callback",
    "TrainResult": "swiftstudy.train",
    "TrainSpec": "swiftstudy.train",
    "ValidateSpec": "swiftstudy.validate",
    "ValidationResult": "swiftstudy.validate",
    "build_probes": "swiftstudy.probes",
    "load_strategy": "swiftstudy.data.strategies",
    "load_study_spec": "swiftstudy.study",
    "load_train_spec": "swiftstudy.train",
    "load_validate_spec": "swiftstudy.validate",
    "render_report": "swiftstudy.report",
    "run_demo": "swiftstudy.demo",
    "run_studies": "swiftstudy.study",
    "run_study": "swiftstudy.study",
    "run_training": "swiftstudy.train",
    "run_validation": "swiftstudy.validate",
}

__all__ = [
    "InputError",
    "ProbeFailure",
    "ProbesResult",
    "ReportFiles",
    "Session",
    "Strategy",
    "StudyResult",
    "StudySpec",
    "SwiftStudyCallback",
    "TrainResult",
    "TrainSpec",
    "ValidateSpec",
    "ValidationResult",
    "__version__",
    "build_probes",
    "load_strategy",
    "load_study_spec",
    "load_train_spec",
    "load_validate_spec",
    "render_report",
    "run_demo",
    "run_studies",
    "run_study",
    "run_training",
    "run_validation",
]

if TYPE_CHECKING:
    from swiftstudy.data.strategies import Strategy, load_strategy
    from swiftstudy.demo import run_demo
    from swiftstudy.errors import InputError
    from swiftstudy.probes import ProbeFailure, ProbesResult, build_probes
    from swiftstudy.report import ReportFiles, render_report
    from swiftstudy.study import (
        StudyResult,
        StudySpec,
        load_study_spec,
        run_studies,
        run_study,
    )
    from swiftstudy.study.callback import SwiftStudyCallback
    from swiftstudy.study.session import Session
    from swiftstudy.train import TrainResult, TrainSpec, load_train_spec, run_training
    from swiftstudy.validate import (
        ValidateSpec,
        ValidationResult,
        load_validate_spec,
        run_validation,
    )


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
