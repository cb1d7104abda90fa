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

The reset option ``layout_of=T`` starts the episode from task T's initial state while the instruction, success and
progress are the env's task's: the instruction-following probe (``info["layout_task_success"]`` says whether T's
goal was reached instead).

``perturb="camera:2,language:1"`` perturbs every held-out reset along LIBERO-Plus's dimensions
(``srpo/sim/tabletop/perturbations.py``); a training-split reset of a perturbed env is refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium
import numpy as np

from srpo.sim.tabletop import perturbations as pt
from srpo.sim.tabletop.physics import TabletopSim
from srpo.sim.interface import env_spaces, parse_reset_options
from srpo.sim.tabletop.scene import MOVABLE_OBJECTS
from srpo.sim.tabletop.tasks import SPLIT_SIZES, SPLITS, InitialState, Task, get_task, placement_ok
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
        perturb: str | dict | None = None,
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
        self.layout_task: Task | None = None
        self.steps = 0
        self.image_every = 1
        self._blank = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.spec_contract.observation.cameras}
        self.observation_space, self.action_space = env_spaces(self.spec_contract)
        self.perturb = pt.parse_perturbations(perturb)
        self._scene_defaults = pt.SceneDefaults.of(self.sim.model)
        self._instruction: str | None = None  # the perturbed instruction of this episode, if any
        m = self.sim.model
        furniture = {m.body(n).id for n in ("cabinet", "drawer", "button_base")}
        self._table_geoms = [m.geom("table").id] + [g for g in range(m.ngeom) if m.geom_bodyid[g] in furniture]

    @property
    def instruction(self) -> str:
        return self._instruction or self.task.instruction

    @property
    def max_steps(self) -> int:
        return self.max_steps_override or self.task.max_steps

    def _observe(self, render: bool = True) -> dict[str, np.ndarray]:
        noise = self.perturb.get("noise", 0)
        # the noise of a step is drawn from (episode, step): the same whatever was rendered before
        rng = pt.perturbation_rng(self.task.name, self.init_state.index, f"noise/{self.steps}") if noise else None
        if render:
            obs = {c.name: self.sim.render(c.name) for c in self.spec_contract.observation.cameras}
            if noise:
                obs = {k: pt.noisy_image(v, noise, rng) for k, v in obs.items()}
        else:  # a fresh copy: the vector env's shared buffers must not alias ours
            obs = {name: blank.copy() for name, blank in self._blank.items()}
        obs["proprio"] = self.sim.proprio() if not noise else pt.noisy_proprio(self.sim.proprio(), noise, rng)
        return obs

    def _info(self, n_clipped: int = 0) -> dict[str, Any]:
        assert self.init_state is not None
        return {
            "task": self.task.name,
            "instruction": self.instruction,
            "init_state_id": self.init_state.index,
            "split": self.init_state.split,
            "success": self.task.success(self.sim),
            "progress": self.task.progress(self.sim, self.init_state),
            "action_clipped": n_clipped,
            "sim_time": self.sim.time,
            "image_fresh": True,
            **({"layout_task": self.layout_task.name, "layout_task_success": self.layout_task.success(self.sim)}
               if self.layout_task is not None else {}),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options, self.image_every = parse_reset_options(options, self.vector_index, extra=("layout_of",))
        if "task" in options:
            self.task = get_task(options["task"])
        split = options.get("split", self.default_split)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        index = options.get("init_state_id")
        if index is None:
            index = int(self.np_random.integers(SPLIT_SIZES[split]))
        self.layout_task = get_task(options["layout_of"]) if options.get("layout_of") else None
        source = self.layout_task or self.task
        self.init_state = self._perturbed(source.initial_state(split, int(index)))
        self.sim.reset(self.init_state.layout)
        for _ in range(self.num_wait_steps):
            self.sim.apply_action(NOOP_ACTION)
        self.steps = 0
        return self._observe(), self._info()

    def _perturbed(self, init: InitialState) -> InitialState:
        """Apply this env's perturbations to a held-out state: the scene (cameras, lights, colours: reset to the
        model's own values first), the start poses, and the instruction. Level 0 changes nothing."""
        levels = self.perturb
        self._instruction = None
        if not levels:
            return init
        if init.split != "heldout":
            raise ValueError(f"perturbations ({pt.format_perturbations(levels)}) apply to held-out states only, never "
                             f"to {init.split} states: they measure robustness, they must not reach training")

        def rng(dim: str):
            return pt.perturbation_rng(self.task.name, init.index, dim)

        model = self.sim.model
        self._scene_defaults.restore(model)
        if "camera" in levels:
            pt.perturb_cameras(model, self._scene_defaults, levels["camera"], rng("camera"))
        if "lighting" in levels:
            pt.perturb_lighting(model, self._scene_defaults, levels["lighting"], rng("lighting"))
        if "table" in levels:
            pt.perturb_table(model, self._scene_defaults, levels["table"], rng("table"), self._table_geoms)
        layout = init.layout
        if "layout" in levels:
            layout = pt.perturb_layout(layout, MOVABLE_OBJECTS, levels["layout"], rng("layout"), placement_ok)
        if "robot_init" in levels:
            layout = pt.perturb_hand(layout, levels["robot_init"], rng("robot_init"))
        if "language" in levels:
            self._instruction = pt.perturb_instruction(self.task.instruction, levels["language"], rng("language"))
        return replace(init, layout=layout) if layout is not init.layout else init

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
