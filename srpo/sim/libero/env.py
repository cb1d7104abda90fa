"""LIBERO as a gymnasium env behind the ``tabletop`` interface (the optional extra ``srpo[libero]``).

Same observations (``agentview``, ``wrist``: H x W x 3 uint8; ``proprio``: (8,) float32, see ``convention.py``), same
7-D actions, same reset options (``task``, ``split``, ``init_state_id``, ``image_every``) and the same ``info`` keys, so
the rollout loop, the evaluation harness and the trainer run on either suite unchanged::

    env = LiberoEnv("libero_spatial", image_size=128)
    obs, info = env.reset(options={"task": 0, "split": "heldout", "init_state_id": 3})

The evaluation protocol is OpenVLA-OFT's (the one SRPO's paper reports): the benchmark's own initial states, 10 no-op
steps after each reset (objects settle), per-suite step limits (``SUITES``), images rotated 180 degrees.

Splits of each task's initial states (the benchmark ships 50 per task):

- ``heldout``: every fifth state (4, 9, 14, ...), 10 per task: what evaluation uses by default;
- ``train``: the other 40: what RL rolls out on, so training never touches an evaluation state;
- ``standard``: all 50 in order, the published protocol, for comparison with reported numbers only: it overlaps the
  training states, and results on it are labelled ``standard`` everywhere.

``fast_render`` turns off shadows, multisampling and reflections: about 3x faster on a CPU, different pixels from the
reference renderer (``benchmarks/libero_throughput.py``); off by default, recorded in every result.

Progress: LIBERO's success is the conjunction of the task's BDDL goal predicates. ``info["progress"]`` is the
fraction of them that hold: a staged measure for multi-predicate goals (several libero_goal / libero_10 / libero_90
tasks), and equal to success for single-predicate goals (every libero_spatial and libero_object task). It is privileged
ground truth for reward-fidelity studies only, never a training signal.

A worker holds one task's simulator at a time (creating one takes seconds and ~1.5-2 GB): a reset to another task
rebuilds it, so callers should order jobs by task (the evaluation and the trainer do).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from srpo.sim.libero.convention import CAMERA_KEYS, libero_spec, proprio_from_env, upright
from srpo.sim.interface import env_spaces, parse_reset_options
from srpo.spec import RobotSpec, validate_action

# headless rendering for every process that imports this (workers included): EGL (Mesa's software rasteriser where
# there is no GPU), one llvmpipe thread per process (two workers on two cores otherwise fight over them)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ.setdefault("LP_NUM_THREADS", "1")

INSTALL_HINT = "pip install 'srpo[libero]'"
NUM_WAIT_STEPS = 10  # OpenVLA-OFT: no-op steps after reset while objects fall into place
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1.0])

SUITES: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,  # not in OpenVLA-OFT's table; its longest demonstrations fit in 400 steps
}
"""The five standard suites and their step limits (OpenVLA-OFT's, from the longest training demonstration)."""

PERTURBATIONS: dict[str, str] = {
    "lan": "language instruction paraphrased",
    "object": "objects replaced",
    "swap": "object positions swapped",
    "task": "task replaced",
}
"""The LIBERO-PRO perturbations shipped for libero_spatial, libero_object, libero_goal and libero_10: suite
``<base>_<key>`` (e.g. ``libero_spatial_swap``), same step limit as its base."""

SPLITS = ("train", "heldout", "standard")
HELDOUT_EVERY = 5


class LiberoNotInstalled(ImportError):
    def __init__(self, what: str = "LIBERO") -> None:
        super().__init__(f"{what} needs the LIBERO extra, which is not installed: {INSTALL_HINT}")


def require_libero() -> None:
    """Raise ``LiberoNotInstalled`` (naming the install command) unless LIBERO can be imported."""
    try:
        with _quiet():
            import libero.libero  # noqa: F401
    except ImportError as exc:
        raise LiberoNotInstalled() from exc


def base_suite(suite: str) -> str:
    """The standard suite a suite name belongs to (``libero_spatial_swap`` -> ``libero_spatial``)."""
    if suite in SUITES:
        return suite
    for base in SUITES:
        if suite.startswith(base + "_") and suite[len(base) + 1:] in PERTURBATIONS:
            return base
    known = sorted(SUITES) + sorted(f"{b}_{p}" for b in SUITES if b != "libero_90" for p in PERTURBATIONS)
    raise ValueError(f"unknown LIBERO suite {suite!r}; available: {', '.join(known)}")


def split_indices(split: str, n_states: int) -> list[int]:
    """The benchmark's initial-state indices that make up ``split`` (see the module docstring)."""
    if split == "heldout":
        return [i for i in range(n_states) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
    if split == "train":
        return [i for i in range(n_states) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    if split == "standard":
        return list(range(n_states))
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@dataclass(frozen=True)
class LiberoTask:
    """One task of a suite: its benchmark name, instruction, BDDL file and step limit."""

    suite: str
    index: int
    name: str
    instruction: str
    bddl_file: str
    max_steps: int


def _quiet():
    """LIBERO and robosuite print on import and construction; keep the caller's console clean. robosuite also
    warns at import that it has no private macro file (its documented way to override settings): an empty one is
    registered, so the defaults apply without three warnings in every worker."""
    if "robosuite.macros_private" not in sys.modules:
        sys.modules["robosuite.macros_private"] = types.ModuleType("robosuite.macros_private")
    return contextlib.redirect_stdout(io.StringIO())


def load_suite(suite: str) -> tuple[list[LiberoTask], Any]:
    """The tasks of ``suite`` and its benchmark object (initial states come from it)."""
    limit = SUITES[base_suite(suite)]
    require_libero()
    with _quiet():
        from libero.libero import benchmark, get_libero_path

        bench = benchmark.get_benchmark_dict()[suite]()
    root = Path(get_libero_path("bddl_files"))
    tasks = [LiberoTask(suite, i, t.name, t.language, str(root / t.problem_folder / t.bddl_file), limit)
             for i, t in enumerate(bench.tasks)]
    return tasks, bench


class LiberoEnv(gymnasium.Env):
    """One LIBERO suite; the task is chosen at reset (by name or index)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, suite: str = "libero_spatial", task: str | int = 0, image_size: int = 128,
                 split: str = "train", max_steps: int | None = None, num_wait_steps: int = NUM_WAIT_STEPS,
                 fast_render: bool = False, vector_index: int | None = None, render_mode: str | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {image_size}")
        base_suite(suite)  # a bad name fails here, before any simulator starts
        self.suite_name = suite
        self.tasks, self._bench = load_suite(suite)
        self.spec_contract: RobotSpec = libero_spec(image_size)
        self.image_size = image_size
        self.default_split = split
        self.max_steps_override = max_steps
        self.num_wait_steps = num_wait_steps
        self.fast_render = fast_render
        self.vector_index = vector_index
        self.render_mode = render_mode
        self.task: LiberoTask = self._task(task)
        self._env = None  # the task's simulator, built at the first reset
        self._env_task: LiberoTask | None = None
        self._init_states: dict[int, np.ndarray] = {}
        self.init_state_id: int | None = None
        self.split = split
        self.steps = 0
        self.image_every = 1
        self._goal = []
        self.observation_space, self.action_space = env_spaces(self.spec_contract)

    # ------------------------------------------------------------------------------------------------ tasks
    def _task(self, task: str | int) -> LiberoTask:
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if not 0 <= task < len(self.tasks):
                raise ValueError(f"task index {task} is outside 0..{len(self.tasks) - 1} of {self.suite_name}")
            return self.tasks[int(task)]
        for t in self.tasks:
            if t.name == task:
                return t
        raise ValueError(f"unknown task {task!r} in {self.suite_name}; tasks: {[t.name for t in self.tasks]}")

    def init_states(self, task: LiberoTask | None = None) -> np.ndarray:
        """The benchmark's initial states of ``task`` (default: the current one), (N, state_dim)."""
        task = task or self.task
        if task.index not in self._init_states:
            with _quiet():
                self._init_states[task.index] = np.asarray(self._bench.get_task_init_states(task.index))
        return self._init_states[task.index]

    def split_size(self, split: str, task: LiberoTask | None = None) -> int:
        return len(split_indices(split, len(self.init_states(task))))

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def max_steps(self) -> int:
        return self.max_steps_override or self.task.max_steps

    # ------------------------------------------------------------------------------------------------ simulator
    def _build(self) -> None:
        """The current task's simulator (the previous task's is closed first: one per worker)."""
        if self._env is not None and self._env_task == self.task:
            return
        self._close_sim()
        with _quiet():
            from libero.libero.envs import OffScreenRenderEnv

            # cameras are rendered here, not by robosuite's observables, so steps between decisions can skip them;
            # hard_reset=False: set_init_state fixes the whole state anyway, and rebuilding the XML costs ~0.5 s
            self._env = OffScreenRenderEnv(bddl_file_name=self.task.bddl_file, camera_heights=self.image_size,
                                           camera_widths=self.image_size, use_camera_obs=False,
                                           has_offscreen_renderer=True, hard_reset=False, ignore_done=True,
                                           horizon=100_000)
            self._env.seed(0)
            self._env.reset()
        self._env_task = self.task
        inner = self._env.env
        self._goal = list(inner.parsed_problem["goal_state"])
        if self.fast_render:
            self._apply_fast_render()

    def _apply_fast_render(self) -> None:
        """No shadows, no multisampling, no reflections: the render context is rebuilt with the new quality."""
        sim = self._env.env.sim
        model = sim.model._model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.light_castshadow[:] = 0
        model.mat_reflectance[:] = 0
        ctx = sim._render_context_offscreen
        if ctx is None:  # robosuite creates it at the first render: render once, then rebuild it
            sim.render(camera_name="agentview", width=self.image_size, height=self.image_size)
            ctx = sim._render_context_offscreen
        ctx.gl_ctx.make_current()
        ctx.con.free()
        ctx._set_mujoco_context_and_buffers()

    def _clear_carried_state(self) -> None:
        """What a soft reset keeps from the previous episode and a saved state does not restore: the solver's warm
        start and the gripper's integrated command. Cleared, the same initial state gives the same episode."""
        inner = self._env.env
        inner.sim.data.qacc_warmstart[:] = 0
        for robot in inner.robots:
            robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)

    def _close_sim(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):
                self._env.close()
        self._env, self._env_task = None, None

    def _render(self, camera: str) -> np.ndarray:
        raw = self._env.env.sim.render(camera_name=camera, width=self.image_size, height=self.image_size)
        return upright(raw)

    def _observe(self, raw: dict, render: bool) -> dict[str, np.ndarray]:
        if render:
            obs = {name: self._render(key.removesuffix("_image")) for name, key in CAMERA_KEYS.items()}
        else:
            obs = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in self.spec_contract.observation.cameras}
        obs["proprio"] = proprio_from_env(raw)
        return obs

    def goal_predicates(self) -> list[bool]:
        """Each BDDL goal predicate of the task, evaluated on the current state."""
        inner = self._env.env
        return [bool(inner._eval_predicate(p)) for p in self._goal]

    def _info(self, held: list[bool], n_clipped: int = 0) -> dict[str, Any]:
        return {
            "task": self.task.name,
            "instruction": self.task.instruction,
            "init_state_id": self.init_state_id,
            "split": self.split,
            "success": all(held),
            "progress": float(np.mean(held)) if held else 0.0,
            "action_clipped": n_clipped,
            "sim_time": float(self._env.env.sim.data.time),
            "image_fresh": True,
            "suite": self.suite_name,
            "benchmark_state": self._benchmark_state,
            "fast_render": self.fast_render,
        }

    # ------------------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options, self.image_every = parse_reset_options(options, self.vector_index)
        if "task" in options:
            self.task = self._task(options["task"])
        split = options.get("split", self.default_split)
        indices = split_indices(split, len(self.init_states()))
        k = options.get("init_state_id")
        if k is None:
            k = int(self.np_random.integers(len(indices)))
        if not 0 <= int(k) < len(indices):
            raise ValueError(f"init_state_id {k} is outside 0..{len(indices) - 1} of the {split} split")
        self.split, self.init_state_id = split, int(k)
        self._benchmark_state = indices[int(k)]
        self._build()
        with _quiet():
            self._env.reset()
            self._clear_carried_state()
            raw = self._env.set_init_state(self.init_states()[self._benchmark_state])
            for _ in range(self.num_wait_steps):
                raw, _, _, _ = self._env.step(NOOP_ACTION)
        self.steps = 0
        return self._observe(raw, True), self._info(self.goal_predicates())

    def step(self, action):
        if self._env is None or self.init_state_id is None:
            raise RuntimeError("call reset() before step()")
        safe = validate_action(action, self.spec_contract.action)
        raw, _, _, _ = self._env.step(safe.action)
        self.steps += 1
        info = self._info(self.goal_predicates(), safe.n_clipped)
        terminated = bool(info["success"])
        truncated = self.steps >= self.max_steps and not terminated
        info["image_fresh"] = fresh = terminated or truncated or self.steps % self.image_every == 0
        return self._observe(raw, fresh), float(terminated), terminated, truncated, info

    def render(self):
        return self._render("agentview")

    def close(self) -> None:
        self._close_sim()

