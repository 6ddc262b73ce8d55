"""The run's kind, owned here: `task_for(recipe)` is the one place outside recipe/ and data/ that reads the task,
and each task (sft.py, classifier.py, preference.py) does what its kind of run does, through the steps of
tasks/base.py's Task. tasks/keys.py says which recipe keys each kind honours."""

from __future__ import annotations

from llm_tune.recipe.schema import Recipe
from llm_tune.tasks.base import Task


def task_for(recipe: Recipe) -> Task:
    from llm_tune.tasks.classifier import ClassifierTask
    from llm_tune.tasks.preference import PreferenceTask
    from llm_tune.tasks.sft import SftTask

    tasks: dict[str, type[Task]] = {"sft": SftTask, "classification": ClassifierTask, "preference": PreferenceTask}
    return tasks[recipe.task](recipe)
