"""Orchestration: a study over checkpoints × example sets, its spec and its result files."""

from swiftstudy.report.results import RelInfRow, ScoreRow
from swiftstudy.study.grams import StudyWork
from swiftstudy.study.run import StudyResult, run_studies, run_study
from swiftstudy.study.spec import (
    CheckpointRef,
    MetricSpec,
    SetSpec,
    StudySpec,
    load_study_spec,
    spec_from_dict,
)

__all__ = [
    "CheckpointRef",
    "MetricSpec",
    "RelInfRow",
    "ScoreRow",
    "SetSpec",
    "StudyResult",
    "StudySpec",
    "StudyWork",
    "load_study_spec",
    "run_studies",
    "run_study",
    "spec_from_dict",
]
