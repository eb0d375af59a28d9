"""The validation study: retrain with each strategy's data and check the swift study's prediction.

``run_validation`` trains every run of a validate spec (with ``swiftstudy train``'s code, cached),
computes the eval set's reference-response NLL under each run's final checkpoint with the study's
own loss (what RelInf predicts), answers the eval set greedily and grades the answers with an
evaluator (unless ``loss_only``), and reports accuracy and NLL with intervals and paired
comparisons against a baseline run, and the rank and sign agreement between a swift study's
scores and the measured changes (accuracy gain and −Δnll).
"""

from swiftstudy.validate.agreement import Agreement, StrategyAgreement, SwiftScore
from swiftstudy.validate.evaluator_spec import EvaluatorSpec, JudgeSpec
from swiftstudy.validate.evaluators import build_evaluator
from swiftstudy.validate.grading import EvalQuery, Evaluator, Grade, load_eval_queries
from swiftstudy.validate.likelihood import QueryNll, compute_completion_nlls
from swiftstudy.validate.results import AccuracyRow, PredictionRow
from swiftstudy.validate.run import RunOutcome, ValidationResult, run_validation
from swiftstudy.validate.spec import (
    EvalSpec,
    RunSpec,
    SwiftSpec,
    ValidateSpec,
    load_validate_spec,
    validate_spec_from_dict,
)

__all__ = [
    "AccuracyRow",
    "Agreement",
    "EvalQuery",
    "EvalSpec",
    "Evaluator",
    "EvaluatorSpec",
    "Grade",
    "JudgeSpec",
    "PredictionRow",
    "QueryNll",
    "RunOutcome",
    "RunSpec",
    "StrategyAgreement",
    "SwiftScore",
    "SwiftSpec",
    "ValidateSpec",
    "ValidationResult",
    "build_evaluator",
    "compute_completion_nlls",
    "load_eval_queries",
    "load_validate_spec",
    "run_validation",
    "validate_spec_from_dict",
]
