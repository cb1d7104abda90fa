"""Simulation: the built-in ``tabletop`` suite, its gymnasium registration and vectorised form.

Importing this module registers ``srpo/Tabletop-v0`` (task chosen by keyword or reset option) and one id per task,
``srpo/tabletop-<task>-v0``::

    import gymnasium, srpo.sim
    env = gymnasium.make("srpo/tabletop-open_drawer-v0", image_size=64)
"""

from __future__ import annotations

import gymnasium

from srpo.sim.tabletop.tasks import TASKS

ENV_ID = "srpo/Tabletop-v0"
_ENTRY = "srpo.sim.tabletop.env:TabletopEnv"


def task_env_id(task: str) -> str:
    return f"srpo/tabletop-{task}-v0"


def _register() -> None:
    if ENV_ID in gymnasium.registry:
        return
    gymnasium.register(ENV_ID, entry_point=_ENTRY)
    for name in TASKS:
        gymnasium.register(task_env_id(name), entry_point=_ENTRY, kwargs={"task": name})


_register()
