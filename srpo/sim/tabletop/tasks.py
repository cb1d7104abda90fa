"""Tabletop tasks: instructions, initial-state distributions, success predicates and ground-truth progress.

Every task shares one scene, so a single env process can run any task (the language instruction says which).
Initial states are generated from a fixed suite seed: each task has a ``train`` set and a disjoint ``heldout`` set.
Evaluation uses ``heldout`` by default (the reference SRPO code trains and evaluates on the same states; we do not).

Ground-truth progress is a function of the simulator state (and the episode's initial state) in [0, 1], equal to 1
exactly at success. It is privileged: benchmarks use it to measure how well a learned reward tracks real progress,
and the trainer's ``oracle`` mode uses it as an upper bound. The SRPO reward never reads it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from srpo.sim.tabletop import scene

if TYPE_CHECKING:
    from srpo.sim.tabletop.physics import TabletopSim

SUITE_SEED = 20251119  # the SRPO paper's date: fixes every initial state of the suite
SPLITS = ("train", "heldout")
SPLIT_SIZES = {"train": 100, "heldout": 200}

OBJECT_WORDS = {"red_cube": "red cube", "blue_cube": "blue cube", "green_cylinder": "green cylinder"}
_FOOTPRINT = {"red_cube": 0.03, "blue_cube": 0.03, "green_cylinder": 0.025, "tray": 0.075, "square": 0.055,
              # the evaluation-only distractors (perturbations.py): in a layout only when a perturbation adds them
              "purple_mug": 0.03, "pink_ball": 0.027, "teal_block": 0.036, "black_bottle": 0.02}


@dataclass(frozen=True)
class InitialState:
    """One reproducible starting configuration of the scene for one task."""

    task: str
    split: str
    index: int
    layout: dict  # name -> (x, y, yaw) for objects, (x, y) for furniture, drawer opening, hand (x, y, z, yaw)

    @property
    def id(self) -> str:
        return f"{self.task}/{self.split}/{self.index}"


def _sample_layout(rng: np.random.Generator, drawer_open: bool) -> dict:
    layout: dict = {
        "cabinet": (float(rng.uniform(-0.2, -0.14)), 0.2),
        "button_base": (float(rng.uniform(0.12, 0.2)), float(rng.uniform(0.15, 0.19))),
        "drawer": float(rng.uniform(0.11, 0.14)) if drawer_open else 0.0,
        "hand": (float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.15, -0.09)), float(rng.uniform(0.16, 0.2)), 0.0),
    }
    cab_x = layout["cabinet"][0]
    placed: list[tuple[float, float, float]] = []
    for name in ("tray", "square", "red_cube", "blue_cube", "green_cylinder"):
        r = _FOOTPRINT[name]
        for _ in range(10_000):
            x, y = rng.uniform(-0.24 + r, 0.24 - r), rng.uniform(-0.21 + r, 0.05 - r)
            in_drawer_path = abs(x - cab_x) < 0.1 + r and y + r > -0.01
            if not in_drawer_path and all(np.hypot(x - px, y - py) > r + pr + 0.02 for px, py, pr in placed):
                break
        else:  # pragma: no cover - the region is large enough; this guards against future edits
            raise RuntimeError(f"could not place {name} without overlap")
        placed.append((x, y, r))
        yaw = float(rng.uniform(-np.pi / 4, np.pi / 4)) if name.endswith("cube") else 0.0
        layout[name] = (float(x), float(y)) if name in ("tray", "square") else (float(x), float(y), yaw)
    return layout


def placement_ok(name: str, x: float, y: float, layout: dict, margin: float = 0.02) -> bool:
    """Whether ``name`` (a movable object, the tray or the square) fits at (x, y) in ``layout``: its footprint
    clear of the others' by ``margin``, of the button base and of the drawer's path, and on the visible table."""
    r = _FOOTPRINT[name]
    (x0, x1), (y0, y1) = scene.VISIBLE_TABLE
    if not (x0 + r <= x <= x1 - r and y0 + r <= y <= y1 - r):
        return False
    cab_x = layout["cabinet"][0]
    if abs(x - cab_x) < 0.1 + r and y + r > -0.01:
        return False
    bx, by = layout["button_base"]
    if abs(x - bx) < 0.035 + r + margin and abs(y - by) < 0.035 + r + margin:
        return False
    return all(np.hypot(x - layout[o][0], y - layout[o][1]) > r + _FOOTPRINT[o] + margin
               for o in _FOOTPRINT if o != name and o in layout)


def _closeness(distance: float, scale: float) -> float:
    """1 at distance 0, falling linearly to 0 at ``scale``."""
    return float(np.clip(1.0 - distance / scale, 0.0, 1.0))


class Task(ABC):
    """A tabletop task. Subclasses define success and staged progress from privileged state."""

    family: str = ""
    stages: tuple[str, ...] = ()

    def __init__(self, name: str, instruction: str, max_steps: int, index: int) -> None:
        self.name, self.instruction, self.max_steps, self.index = name, instruction, max_steps, index

    @property
    def multi_stage(self) -> bool:
        return len(self.stages) > 1

    def initial_state(self, split: str, index: int) -> InitialState:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if not 0 <= index < SPLIT_SIZES[split]:
            raise IndexError(f"{self.name}: {split} has initial states 0..{SPLIT_SIZES[split] - 1}, not {index}")
        rng = np.random.default_rng([SUITE_SEED, self.index, SPLITS.index(split), index])
        return InitialState(self.name, split, index, _sample_layout(rng, drawer_open=self.name == "close_drawer"))

    def initial_states(self, split: str) -> list[InitialState]:
        return [self.initial_state(split, i) for i in range(SPLIT_SIZES[split])]

    @abstractmethod
    def success(self, sim: "TabletopSim") -> bool: ...

    @abstractmethod
    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        """Progress of an unsuccessful state, in [0, 0.95]."""

    def progress(self, sim: "TabletopSim", init: InitialState) -> float:
        """Ground-truth progress in [0, 1]: exactly 1 at success, at most 0.95 otherwise."""
        if self.success(sim):
            return 1.0
        return float(np.clip(self._partial_progress(sim, init), 0.0, 0.95))


def _object_top(sim: "TabletopSim", obj: str) -> np.ndarray:
    half = scene.CYL_HALF_HEIGHT if "cylinder" in obj else scene.CUBE_HALF
    return sim.object_pos(obj) + np.array([0.0, 0.0, half])


class ReachTask(Task):
    """Touch a named object with the gripper."""

    family, stages = "reach", ("approach",)

    def __init__(self, name: str, obj: str, index: int) -> None:
        super().__init__(name, f"touch the {OBJECT_WORDS[obj]}", 80, index)
        self.obj = obj

    def success(self, sim: "TabletopSim") -> bool:
        return sim.hand_touching(self.obj)

    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        tip = sim.grip_pos() - np.array([0.0, 0.0, scene.GRIP_TO_TIP])
        return 0.95 * _closeness(float(np.linalg.norm(tip - _object_top(sim, self.obj))), 0.35)


class PushTask(Task):
    """Push a named object until its centre lies on the yellow square."""

    family, stages = "push", ("approach", "push")

    def __init__(self, name: str, obj: str, index: int) -> None:
        super().__init__(name, f"push the {OBJECT_WORDS[obj]} onto the yellow square", 160, index)
        self.obj = obj

    def success(self, sim: "TabletopSim") -> bool:
        d = np.abs(sim.object_pos(self.obj)[:2] - sim.furniture_pos("square")[:2])
        return bool(np.all(d < scene.SQUARE_HALF - 0.012) and sim.object_pos(self.obj)[2] < 0.05)

    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        d0 = np.hypot(*(np.array(init.layout[self.obj][:2]) - init.layout["square"]))
        d = np.linalg.norm(sim.object_pos(self.obj)[:2] - sim.furniture_pos("square")[:2])
        reach = _closeness(max(0.0, float(np.linalg.norm(sim.grip_pos() - sim.object_pos(self.obj))) - 0.07), 0.3)
        return 0.25 * reach + 0.7 * _closeness(d, d0)


class PlaceTask(Task):
    """Pick a named object and place it in the tray or on another object (stacking)."""

    stages = ("approach", "grasp", "lift", "transport", "release")

    def __init__(self, name: str, obj: str, target: str, index: int) -> None:
        if target == "tray":
            instruction, self.family = f"put the {OBJECT_WORDS[obj]} in the white tray", "pick_place"
        else:
            instruction, self.family = f"stack the {OBJECT_WORDS[obj]} on the {OBJECT_WORDS[target]}", "stack"
        super().__init__(name, instruction, 220, index)
        self.obj, self.target = obj, target

    def target_xy(self, sim: "TabletopSim") -> np.ndarray:
        return (sim.furniture_pos("tray") if self.target == "tray" else sim.object_pos(self.target))[:2]

    def _over_target(self, sim: "TabletopSim") -> bool:
        tol = 0.042 if self.target == "tray" else 0.02
        return bool(np.all(np.abs(sim.object_pos(self.obj)[:2] - self.target_xy(sim)) < tol))

    def success(self, sim: "TabletopSim") -> bool:
        if not self._over_target(sim) or sim.grasped(self.obj) or not sim.object_upright(self.obj):
            return False
        z = sim.object_pos(self.obj)[2]
        if self.target == "tray":
            return bool(z < scene.TRAY_FLOOR + scene.CUBE_HALF + 0.012)
        dz = z - sim.object_pos(self.target)[2]
        return bool(abs(dz - 2 * scene.CUBE_HALF) < 0.006 and sim.object_upright(self.target))

    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        obj = sim.object_pos(self.obj)
        reach = _closeness(max(0.0, float(np.linalg.norm(sim.grip_pos() - obj)) - 0.01), 0.3)
        value = 0.3 * reach
        if sim.grasped(self.obj):
            target0 = init.layout["tray"] if self.target == "tray" else init.layout[self.target][:2]
            d0 = float(np.hypot(*(np.array(init.layout[self.obj][:2]) - target0)))
            lift = float(np.clip((obj[2] - scene.CUBE_HALF) / 0.04, 0.0, 1.0))
            transport = _closeness(float(np.linalg.norm(obj[:2] - self.target_xy(sim))), d0)
            value = max(value, 0.4 + 0.15 * lift + 0.35 * transport)
        if self._over_target(sim) and obj[2] > scene.CUBE_HALF + 0.003:
            value = max(value, 0.9)
        return value


class ButtonTask(Task):
    """Press the spring-loaded button down."""

    family, stages = "button", ("approach", "press")

    def __init__(self, name: str, index: int) -> None:
        super().__init__(name, "press the orange button", 80, index)

    def success(self, sim: "TabletopSim") -> bool:
        return sim.button_depth() > 0.008

    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        top = sim.furniture_pos("button_base") + np.array([0.0, 0.0, scene.BUTTON_TOP])
        tip = sim.grip_pos() - np.array([0.0, 0.0, scene.GRIP_TO_TIP])
        return 0.5 * _closeness(float(np.linalg.norm(tip - top)), 0.35) + 0.45 * min(1.0, sim.button_depth() / 0.008)


class DrawerTask(Task):
    """Open the drawer by its handle, or push an open drawer shut."""

    family, stages = "drawer", ("approach", "move")
    OPEN_AT, CLOSED_AT = 0.1, 0.015

    def __init__(self, name: str, open_it: bool, index: int) -> None:
        super().__init__(name, "open the drawer" if open_it else "close the drawer", 150, index)
        self.open_it = open_it

    def success(self, sim: "TabletopSim") -> bool:
        o = sim.drawer_opening()
        return o > self.OPEN_AT if self.open_it else o < self.CLOSED_AT

    def _partial_progress(self, sim: "TabletopSim", init: InitialState) -> float:
        handle = sim.handle_pos()
        if self.open_it:
            contact = handle + np.array([0.0, 0.025, 0.0])  # behind the bar, where the fingers hook it
            moved = sim.drawer_opening() / self.OPEN_AT
        else:
            contact = handle - np.array([0.0, 0.02, 0.0])  # in front of the bar, where the fingers push it
            o0 = init.layout["drawer"]
            moved = (o0 - sim.drawer_opening()) / (o0 - self.CLOSED_AT)
        reach = _closeness(max(0.0, float(np.linalg.norm(sim.grip_pos() - contact)) - 0.01), 0.3)
        return 0.35 * reach + 0.6 * float(np.clip(moved, 0.0, 1.0))


def _build_tasks() -> dict[str, Task]:
    specs = [
        lambda i: ReachTask("reach_red_cube", "red_cube", i),
        lambda i: ReachTask("reach_green_cylinder", "green_cylinder", i),
        lambda i: PushTask("push_red_cube", "red_cube", i),
        lambda i: PushTask("push_green_cylinder", "green_cylinder", i),
        lambda i: PlaceTask("place_red_cube_in_tray", "red_cube", "tray", i),
        lambda i: PlaceTask("place_green_cylinder_in_tray", "green_cylinder", "tray", i),
        lambda i: PlaceTask("stack_red_cube_on_blue_cube", "red_cube", "blue_cube", i),
        lambda i: ButtonTask("press_button", i),
        lambda i: DrawerTask("open_drawer", True, i),
        lambda i: DrawerTask("close_drawer", False, i),
    ]
    tasks = [make(i) for i, make in enumerate(specs)]
    return {t.name: t for t in tasks}


TASKS: dict[str, Task] = _build_tasks()


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown tabletop task {name!r}; available: {sorted(TASKS)}") from None
