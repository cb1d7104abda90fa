"""The simulation suites behind one interface: ``tabletop`` (built in) and the LIBERO suites (``srpo[libero]``).

The evaluation harness, the rollout loop and the trainer ask this module which tasks a suite has, how many initial
states each split holds and how to build a worker's env; nothing above it names a suite's classes.
"""

from __future__ import annotations

from functools import lru_cache

TABLETOP = "tabletop"


def is_libero(suite: str) -> bool:
    return suite.startswith("libero_")


def check_suite(suite: str) -> None:
    """Raise a ValueError naming the available suites for an unknown name (LIBERO need not be installed)."""
    if suite == TABLETOP:
        return
    if is_libero(suite):
        from srpo.sim.libero.env import base_suite

        base_suite(suite)
        return
    raise ValueError(f"unknown suite {suite!r}; available: tabletop, libero_spatial, libero_object, libero_goal, "
                     "libero_10, libero_90 and the LIBERO-PRO variants (e.g. libero_spatial_swap)")


@lru_cache(maxsize=None)
def suite_tasks(suite: str) -> tuple[str, ...]:
    """Task names in the suite's order."""
    check_suite(suite)
    if suite == TABLETOP:
        from srpo.sim.tabletop.tasks import TASKS

        return tuple(TASKS)
    from srpo.sim.libero.env import load_suite

    return tuple(t.name for t in load_suite(suite)[0])


@lru_cache(maxsize=None)
def splits(suite: str) -> dict[str, int]:
    """Split name -> initial states per task."""
    check_suite(suite)
    if suite == TABLETOP:
        from srpo.sim.tabletop.tasks import SPLIT_SIZES

        return dict(SPLIT_SIZES)
    from srpo.sim.libero.env import SPLITS, load_suite, split_indices

    tasks, bench = load_suite(suite)
    n = min(len(bench.get_task_init_states(t.index)) for t in tasks)
    return {s: len(split_indices(s, n)) for s in SPLITS}


def resolve_task(suite: str, task: str) -> str:
    """A task given by name (or, for LIBERO, by index) -> its name; unknown ones raise naming the choices."""
    names = suite_tasks(suite)
    if task in names:
        return task
    if is_libero(suite) and str(task).isdigit() and int(task) < len(names):
        return names[int(task)]
    raise ValueError(f"unknown task {task!r} in {suite}; available: {list(names)}")
