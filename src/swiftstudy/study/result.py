"""A study's result in memory: its tables, ``save`` to a folder, and views for a notebook.

``scores``, ``relinf`` and ``norms`` are tuples of rows that also convert with ``to_pandas()``
(one DataFrame column per CSV column, in the CSV's order, the same rows). ``top_probes`` lists the
probes that drive a metric (``swiftstudy.scores.drivers``), and in Jupyter a result shows its
verdict table and metrics-by-step figure. ``save`` writes the files ``run_study`` writes, then the
report; until then nothing is on disk.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swiftstudy.constants import CONFIG_YAML, NORMS_CSV, RELINF_CSV, SCORES_CSV, TOKENS_JSONL
from swiftstudy.errors import InputError
from swiftstudy.fileio import write_text_atomic
from swiftstudy.model import Checkpoint
from swiftstudy.report.results import (
    NORMS_COLUMNS,
    RELINF_COLUMNS,
    SCORES_COLUMNS,
    render_norms_csv,
    render_relinf_csv,
    render_scores_csv,
    render_tokens_jsonl,
)
from swiftstudy.rundir import save_run_config
from swiftstudy.study.grams import StudyWork

if TYPE_CHECKING:
    import pandas

    from swiftstudy.report import ReportFiles
    from swiftstudy.report.results import StudyTables

PANDAS_MISSING = (
    "to_pandas() needs pandas, which is not installed: pip install pandas (the rows are "
    "also plain dataclasses, and the same tables are in the CSV files result.save() writes)"
)
#: Probes listed per direction by ``top_probes`` when ``k`` is not given.
DEFAULT_TOP_PROBES = 5


class Rows(tuple):
    """The rows of one table (dataclasses), with ``to_pandas()``; otherwise a plain tuple."""

    #: The table's columns, in file order: the row attributes ``to_pandas`` reads (empty: the
    #: rows' dataclass fields).
    columns: tuple[str, ...] = ()

    def to_pandas(self) -> pandas.DataFrame:
        """The rows as a DataFrame with the CSV file's columns and rows (None: a missing value).

        Raises:
            ImportError: pandas is not installed.
        """
        try:
            import pandas
        except ImportError as err:
            raise ImportError(PANDAS_MISSING) from err
        columns = self.columns
        if not columns and self:
            columns = tuple(f.name for f in fields(self[0]))
        return pandas.DataFrame(
            [[getattr(row, c) for c in columns] for row in self], columns=list(columns)
        )


class ScoreRows(Rows):
    """The rows of ``scores.csv``."""

    columns = SCORES_COLUMNS


class RelInfRows(Rows):
    """The rows of ``relinf.csv``."""

    columns = RELINF_COLUMNS


class NormRows(Rows):
    """The rows of ``norms.csv``."""

    columns = NORMS_COLUMNS


@dataclass(frozen=True)
class StudyResult:
    """What a study computed (``run_study`` also wrote it to ``out_dir``, on rank 0).

    Attributes:
        out_dir: The results folder; None for a session's study until ``save``.
        scores: The rows of ``scores.csv``.
        relinf: The rows of ``relinf.csv``.
        checkpoints: The checkpoints, in step order.
        work: Gradients computed, read from the cache, and checkpoints resumed.
        rank: This process's rank under ``torchrun`` / ``accelerate launch`` (0 alone); every
            rank returns the same rows, only rank 0 writes files.
        norms: The rows of ``norms.csv``.
        tokens: The records of ``tokens.jsonl``.
        config: ``config.yaml`` without provenance (added when saved); None: unknown.
    """

    out_dir: Path | None
    scores: ScoreRows
    relinf: RelInfRows
    checkpoints: tuple[Checkpoint, ...]
    work: StudyWork = field(default_factory=StudyWork)
    rank: int = 0
    norms: NormRows = field(default_factory=NormRows)
    tokens: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)
    config: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, kind in (("scores", ScoreRows), ("relinf", RelInfRows), ("norms", NormRows)):
            value = getattr(self, name)
            if type(value) is not kind:
                object.__setattr__(self, name, kind(value))

    def save(self, out_dir: str | Path, *, overwrite: bool = False) -> ReportFiles:
        """Write the result files ``run_study`` writes, then the report, into ``out_dir``.

        Args:
            out_dir: The folder (created if needed).
            overwrite: Replace the results of another study already in ``out_dir``.

        Returns:
            The report's files (``report.html`` and the rest).

        Raises:
            InputError: ``out_dir`` holds a study's results and ``overwrite`` is False, or is
                not a folder.
            ValueError: The result has no config (it was not computed by a study).
        """
        if self.config is None:
            raise ValueError("this result has no config.yaml to save: make it with a study")
        out_dir = Path(out_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError("exists and is not a folder", path=out_dir)
        if (out_dir / CONFIG_YAML).is_file() and not overwrite:
            raise InputError(
                "holds the results of a study: save into another folder or pass overwrite=True",
                path=out_dir,
            )
        write_result_tables(out_dir, self)
        # config.yaml last: its presence marks a complete result (the report is derived from it).
        save_run_config(out_dir / CONFIG_YAML, self.config, command=None)
        # Imported here: the report draws with matplotlib, which the computation does not need.
        from swiftstudy.report import render_report

        return render_report(out_dir)

    @functools.cached_property
    def tables(self) -> StudyTables:
        """The tables as the report reads them from a saved folder, built in memory."""
        from swiftstudy.report.results import build_study_tables

        if self.config is None:
            raise ValueError("this result has no config: make it with a study")
        return build_study_tables(
            self.config, self.scores, self.relinf, self.norms, self.tokens, self.out_dir
        )

    def top_probes(self, metric: str, k: int = DEFAULT_TOP_PROBES) -> Rows:
        """The ``k`` probes that help ``metric`` most and the ``k`` that hurt it most.

        A probe's score is its mean RelInf over checkpoints and eval examples
        (``swiftstudy.scores.drivers``); each row names the eval examples it moves most.

        Raises:
            KeyError: No metric has that name.
        """
        from swiftstudy.report.drivers import find_metric_drivers

        return Rows(find_metric_drivers(self.tables, metric, k).drivers)

    def _repr_html_(self) -> str:
        """Jupyter's view: the verdict table and the metrics-by-step figure (inline SVG)."""
        from swiftstudy.report.notebook import render_summary_html

        return render_summary_html(self.tables)


def write_result_tables(out_dir: Path, result: StudyResult) -> None:
    """Write ``tokens.jsonl``, ``relinf.csv``, ``norms.csv`` and ``scores.csv``, each atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / TOKENS_JSONL, render_tokens_jsonl(result.tokens))
    write_text_atomic(out_dir / RELINF_CSV, render_relinf_csv(result.relinf))
    write_text_atomic(out_dir / NORMS_CSV, render_norms_csv(result.norms))
    write_text_atomic(out_dir / SCORES_CSV, render_scores_csv(result.scores))
