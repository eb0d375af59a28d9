"""The package's public names are imported on first use, and each one is there."""

from __future__ import annotations

import subprocess
import sys

import pytest

import swiftstudy
import swiftstudy.report


@pytest.mark.parametrize("package", [swiftstudy, swiftstudy.report])
def test_every_public_name_resolves(package):
    names = [name for name in package.__all__ if name != "__version__"]
    assert sorted(names) == sorted(package._SOURCES)
    for name in names:
        value = getattr(package, name)
        assert getattr(value, "__name__", name) == name
        assert name in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_from_import_of_a_lazy_name():
    from swiftstudy import InputError, render_report

    assert InputError.__module__ == "swiftstudy.errors"
    assert render_report.__module__ == "swiftstudy.report.render"


def test_the_study_and_the_result_tables_load_no_matplotlib():
    # The study writes its tables with swiftstudy.report.results; the report's figures are not
    # imported until a report is rendered.
    code = (
        "import swiftstudy.study, swiftstudy.report.results, sys; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
