"""The ``tabletop`` suite as a gymnasium environment with LIBERO's interface.

Observations: ``{"agentview": HxWx3 uint8, "wrist": HxWx3 uint8, "proprio": (8,) float32}``; the instruction is
``env.unwrapped.instruction`` and ``info["instruction"]``. Actions: 7-D in [-1, 1] (see ``srpo.spec``).
The reward is the binary success (as LIBERO); ``terminated`` is set at success and ``truncated`` at the task's step
limit. ``info["progress"]`` is the privileged ground-truth progress: never a training signal for SRPO.

Rendering is most of a step's cost, and a policy that runs open-loop chunks only looks at every k-th observation. The
reset option ``image_every=k`` renders the cameras only at steps 0, k, 2k, ... and at the episode's last step; the
other steps return black images and ``info["image_fresh"] = False`` (a consumer must check it before using them).

Reset options choose the task and initial state, so one env process can serve every task::

    env = gymnasium.make("srpo/Tabletop-v0", task="open_drawer")
    obs, info = env.reset(seed=0, options={"split": "heldout", "init_state_id": 3})
    obs, info = env.reset(options={"task": "press_button"})  # random train state from the env's RNG
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from srpo.sim.tabletop.physics import TabletopSim
from srpo.sim.interface import env_spaces, parse_reset_options
from srpo.sim.tabletop.tasks import SPLIT_SIZES, SPLITS, InitialState, Task, get_task
from srpo.spec import TABLETOP_SPEC, RobotSpec, validate_action

NUM_WAIT_STEPS = 5  # no-op steps after reset so objects settle (LIBERO waits 10 at its own rate)
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])


class TabletopEnv(gymnasium.Env):
    """Gymnasium env for one tabletop task at a time (switchable at reset)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        task: str = "place_red_cube_in_tray",
        image_size: int = 64,
        split: str = "train",
        max_steps: int | None = None,
        num_wait_steps: int = NUM_WAIT_STEPS,
        render_mode: str | None = None,
        vector_index: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if image_size < 16 or image_size > 512:
            raise ValueError(f"image_size must be in [16, 512], got {image_size}")
        self.spec_contract: RobotSpec = TABLETOP_SPEC.with_image_size(image_size, image_size)
        self.sim = TabletopSim(image_size=image_size)
        self.task: Task = get_task(task)
        self.default_split = split
        self.max_steps_override = max_steps
        self.num_wait_steps = num_wait_steps
        self.render_mode = render_mode
        self.vector_index = vector_index
        self.init_state: InitialState | None = None
        self.steps = 0
        self.image_every = 1
        self._blank = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.spec_contract.observation.cameras}
        self.observation_space, self.action_space = env_spaces(self.spec_contract)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def max_steps(self) -> int:
        return self.max_steps_override or self.task.max_steps

    def _observe(self, render: bool = True) -> dict[str, np.ndarray]:
        if render:
            obs = {c.name: self.sim.render(c.name) for c in self.spec_contract.observation.cameras}
        else:  # a fresh copy: the vector env's shared buffers must not alias ours
            obs = {name: blank.copy() for name, blank in self._blank.items()}
        obs["proprio"] = self.sim.proprio()
        return obs

    def _info(self, n_clipped: int = 0) -> dict[str, Any]:
        assert self.init_state is not None
        return {
            "task": self.task.name,
            "instruction": self.task.instruction,
            "init_state_id": self.init_state.index,
            "split": self.init_state.split,
            "success": self.task.success(self.sim),
            "progress": self.task.progress(self.sim, self.init_state),
            "action_clipped": n_clipped,
            "sim_time": self.sim.time,
            "image_fresh": True,
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options, self.image_every = parse_reset_options(options, self.vector_index)
        if "task" in options:
            self.task = get_task(options["task"])
        split = options.get("split", self.default_split)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        index = options.get("init_state_id")
        if index is None:
            index = int(self.np_random.integers(SPLIT_SIZES[split]))
        self.init_state = self.task.initial_state(split, int(index))
        self.sim.reset(self.init_state.layout)
        for _ in range(self.num_wait_steps):
            self.sim.apply_action(NOOP_ACTION)
        self.steps = 0
        return self._observe(), self._info()

    def step(self, action):
        if self.init_state is None:
            raise RuntimeError("call reset() before step()")
        safe = validate_action(action, self.spec_contract.action)
        self.sim.apply_action(safe.action)
        self.steps += 1
        info = self._info(safe.n_clipped)
        terminated = bool(info["success"])
        truncated = self.steps >= self.max_steps and not terminated
        info["image_fresh"] = fresh = terminated or truncated or self.steps % self.image_every == 0
        return self._observe(fresh), float(terminated), terminated, truncated, info

    def render(self):
        return self.sim.render("agentview")

    def close(self) -> None:
        self.sim.close_renderer()
