"""The built-in MuJoCo ``tabletop`` manipulation suite (10 tasks, 5 families) with scripted experts."""

from srpo.sim.tabletop.tasks import SPLIT_SIZES, SPLITS, TASKS, InitialState, Task, get_task

__all__ = ["SPLITS", "SPLIT_SIZES", "TASKS", "InitialState", "Task", "get_task"]
