"""The demo: rule-made task families, the paper's three studies as recipes, and ``run_demo``.

* :mod:`~swiftstudy.demo.families`: task families with checkable answers;
* :mod:`~swiftstudy.demo.dataset`: the base data and the study sets, by rule, from a seed;
* :mod:`~swiftstudy.demo.recipes`: the CoT, Clarify and Eval study specs (``swiftstudy init``);
* :mod:`~swiftstudy.demo.run`: data → base run → three studies → reports (``swiftstudy demo``).
"""

from swiftstudy.demo.dataset import write_demo_data
from swiftstudy.demo.recipes import RECIPES, Recipe, RecipeFiles, write_recipes
from swiftstudy.demo.run import DemoResult, run_demo

__all__ = [
    "RECIPES",
    "DemoResult",
    "Recipe",
    "RecipeFiles",
    "run_demo",
    "write_demo_data",
    "write_recipes",
]
