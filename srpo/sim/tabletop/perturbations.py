"""Evaluation-time perturbations of the ``tabletop`` suite along LIBERO-Plus's dimensions, each with levels 0-3.

    env = TabletopEnv(image_size=64, perturb="camera:2,language:1")   # held-out resets only
    parse_perturbations("camera:2,lighting:1")  ->  {"camera": 2, "lighting": 1}

Level 0 is exactly the unperturbed env. A perturbation is drawn per (task, initial state, dimension), so an
episode's perturbation is the same in every run and every policy is tested on the same ones. They apply only to
held-out states: a training-split reset with a perturbation is refused, so nothing perturbed can leak into training.

| dimension | what changes | level 1 / 2 / 3 |
|---|---|---|
| ``camera`` | both cameras' poses: a position offset and a rotation | 1.5 / 3 / 4.5 cm, 3 / 6 / 9 degrees |
| ``lighting`` | the lights' intensity, colour and direction | x0.75-1.25 / x0.5-1.5 / x0.3-1.7, tints, tilt |
| ``table`` | the table's and furniture's colours; the background (a backdrop and floor); textures | colour shift 0.15 / 0.3 / 0.5 + a coloured backdrop / + a textured table and a floor / + textured backdrop and floor |
| ``noise`` | Gaussian image noise and blur, proprio noise | sigma 4 / 8 / 16 (of 255) + blur from level 2; 2 / 4 / 8 mm |
| ``robot_init`` | the end-effector's start pose | 3 / 6 / 9 cm and 10 / 20 / 30 degrees of yaw |
| ``layout`` | the movable objects' start positions; extra distractor objects | moved 4 / 7 / 10 cm, clear of the rest; 1 / 2 / 4 distractors |
| ``language`` | the instruction | a paraphrase / synonyms for verbs and objects / shuffled words with nonsense |

Every dimension touches only what it names (tested): pixels for ``camera``, ``lighting``, ``table`` and image
``noise``; proprio for proprio ``noise``; initial poses for ``robot_init`` and ``layout``; text for ``language``.

The background, the textures and the distractors are part of the scene from the start (``scene.DISTRACTORS``,
``SCENERY_GEOMS``, ``TEXTURED_MATERIALS``): invisible, collision-free and parked out of view until a perturbation
shows them, so the unperturbed scene renders and simulates bit for bit as it did without them (tested). The
distractors are fixed obstacles (static bodies): movable ones would add free joints, and so change the state vector of
every unperturbed episode.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from srpo.sim.tabletop.scene import DISTRACTORS, SCENERY_GEOMS, TEXTURED_MATERIALS, VISIBLE_TABLE

DIMENSIONS = {
    "camera": "camera viewpoint: pose offsets of the third-person and wrist cameras",
    "lighting": "lighting: intensity, colour and direction",
    "table": "table, furniture and background: colours and textures",
    "noise": "sensor noise: image noise and blur, proprioception noise",
    "robot_init": "robot initial state: end-effector start offsets",
    "layout": "object layout: the movable objects moved from their held-out positions, extra distractors",
    "language": "instruction: paraphrase, synonyms, corrupted",
}
LEVELS = (0, 1, 2, 3)
# bumped when what a dimension's levels do changes, so cached results of the old meaning are not reused
DIMENSION_VERSIONS = {"camera": 1, "lighting": 1, "table": 2, "noise": 1, "robot_init": 1, "layout": 2, "language": 1}


def perturbation_version(levels: dict[str, int]) -> str:
    """``"table@2,layout@2"``: which meaning of each perturbed dimension produced a result ("" unperturbed)."""
    return ",".join(f"{d}@{DIMENSION_VERSIONS[d]}" for d in levels)


class PerturbationError(ValueError):
    """A perturbation that does not exist; the message lists the valid ones."""


def parse_perturbations(spec: str | dict | None) -> dict[str, int]:
    """``"camera:2,lighting:1"`` (or a dict) -> ``{"camera": 2, "lighting": 1}``; level-0 entries are dropped."""
    if not spec:
        return {}
    items = spec.items() if isinstance(spec, dict) else [part.split(":", 1) if ":" in part else (part, None)
                                                        for part in str(spec).split(",") if part.strip()]
    out: dict[str, int] = {}
    for dim, level in items:
        dim = str(dim).strip()
        if dim not in DIMENSIONS:
            raise PerturbationError(f"unknown perturbation dimension {dim!r}; valid: {', '.join(DIMENSIONS)}")
        try:
            value = int(str(level).strip())
        except ValueError:
            value = -1
        if value not in LEVELS:
            raise PerturbationError(f"{dim}: level must be one of {LEVELS} (as DIM:LEVEL), got {level!r}")
        if dim in out:
            raise PerturbationError(f"{dim} is given twice")
        if value:
            out[dim] = value
    return out


def format_perturbations(levels: dict[str, int]) -> str:
    return ",".join(f"{d}:{v}" for d, v in levels.items()) or "none"


def perturbation_rng(task: str, init_state_id: int, dim: str) -> np.random.Generator:
    """The generator of one (task, held-out state, dimension): the same draw in every run."""
    return np.random.default_rng([zlib.crc32(task.encode()), int(init_state_id), zlib.crc32(dim.encode()), 1601])


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=n)
    return v / max(float(np.linalg.norm(v)), 1e-9)


# ---------------------------------------------------------------------------------------------------- language
VERB_PARAPHRASES = {"touch": "reach for", "push": "slide", "put": "place", "stack": "set", "press": "push down",
                    "open": "pull open", "close": "shut"}
OBJECT_SYNONYMS = {"cube": "block", "cylinder": "can", "tray": "bin", "button": "switch", "drawer": "drawer",
                   "square": "patch", "white": "pale", "orange": "amber", "yellow": "golden", "red": "crimson",
                   "blue": "navy", "green": "lime"}
NONSENSE = ("blick", "dax", "wug", "toma", "fep", "zorp")


def perturb_instruction(instruction: str, level: int, rng: np.random.Generator) -> str:
    """Level 1: the verb paraphrased; 2: verb and nouns/adjectives by synonyms; 3: words shuffled, two replaced by
    nonsense. "stack the A on the B" keeps its structure ("set the A on top of the B") at levels 1-2."""
    if level <= 0:
        return instruction
    words = instruction.split()
    verb = words[0]
    out = [VERB_PARAPHRASES.get(verb, verb)] + words[1:]
    if verb == "stack" and "on" in out:
        at = out.index("on")
        out[at : at + 1] = ["on", "top", "of"]
    if level >= 2:
        out = [OBJECT_SYNONYMS.get(w, w) for w in out]
    if level >= 3:
        out = [words[i] for i in rng.permutation(len(words))]
        for i in rng.choice(len(out), size=min(2, len(out)), replace=False):
            out[i] = NONSENSE[int(rng.integers(len(NONSENSE)))]
    return " ".join(out)


# ------------------------------------------------------------------------------------------------------ sensors
def noisy_image(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (sigma 4 / 8 / 16 of 255) and, from level 2, a 3x3 (level 3: two passes) box blur."""
    x = image.astype(np.float32)
    for _ in range(max(0, level - 1)):
        padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(padded[i : i + x.shape[0], j : j + x.shape[1]] for i in range(3) for j in range(3)) / 9.0
    x = x + rng.normal(0.0, 4.0 * 2 ** (level - 1), x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def noisy_proprio(proprio: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """2 / 4 / 8 mm on the position, a comparable share on the rest (orientation and gripper)."""
    return (proprio + rng.normal(0.0, 0.002 * 2 ** (level - 1), proprio.shape)).astype(np.float32)


@dataclass
class SceneDefaults:
    """The model values the scene perturbations overwrite, kept to restore them exactly (level 0)."""

    cam_pos: np.ndarray
    cam_quat: np.ndarray
    light_diffuse: np.ndarray
    light_dir: np.ndarray
    headlight_ambient: np.ndarray
    headlight_diffuse: np.ndarray
    geom_rgba: np.ndarray
    geom_matid: np.ndarray

    @classmethod
    def of(cls, model) -> "SceneDefaults":
        return cls(model.cam_pos.copy(), model.cam_quat.copy(), model.light_diffuse.copy(), model.light_dir.copy(),
                   model.vis.headlight.ambient.copy(), model.vis.headlight.diffuse.copy(), model.geom_rgba.copy(),
                   model.geom_matid.copy())

    def restore(self, model) -> None:
        model.cam_pos[:] = self.cam_pos
        model.cam_quat[:] = self.cam_quat
        model.light_diffuse[:] = self.light_diffuse
        model.light_dir[:] = self.light_dir
        model.vis.headlight.ambient[:] = self.headlight_ambient
        model.vis.headlight.diffuse[:] = self.headlight_diffuse
        model.geom_rgba[:] = self.geom_rgba
        model.geom_matid[:] = self.geom_matid


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def perturb_cameras(model, defaults: SceneDefaults, level: int, rng: np.random.Generator) -> None:
    for cam in range(model.ncam):
        model.cam_pos[cam] = defaults.cam_pos[cam] + 0.015 * level * _unit(rng, 3)
        axis, angle = _unit(rng, 3), np.deg2rad(3.0 * level)
        turn = np.concatenate([[np.cos(angle / 2)], np.sin(angle / 2) * axis])
        q = _quat_mul(turn, defaults.cam_quat[cam])
        model.cam_quat[cam] = q / np.linalg.norm(q)


def perturb_lighting(model, defaults: SceneDefaults, level: int, rng: np.random.Generator) -> None:
    spread = (0.25, 0.5, 0.7)[level - 1]
    scale = 1.0 + spread * rng.uniform(-1, 1)
    tint = 1.0 + 0.15 * level * rng.uniform(-1, 1, 3)
    model.light_diffuse[:] = np.clip(defaults.light_diffuse * scale * tint, 0, 1)
    model.vis.headlight.ambient[:] = np.clip(defaults.headlight_ambient * scale * tint, 0, 1)
    model.vis.headlight.diffuse[:] = np.clip(defaults.headlight_diffuse * scale * tint, 0, 1)
    for i in range(model.nlight):
        d = defaults.light_dir[i] + 0.25 * level * _unit(rng, 3)
        model.light_dir[i] = d / np.linalg.norm(d)


def perturb_table(model, defaults: SceneDefaults, level: int, rng: np.random.Generator, geoms: list[int]) -> None:
    """The table's and furniture's colours shift by 0.15 / 0.3 / 0.5 (``geoms``, the table first); a backdrop in a
    random colour appears behind the table; from level 2 the table takes a texture (tinted by its shifted colour)
    and a floor appears; at level 3 the backdrop and the floor are textured too."""
    shift = (0.15, 0.3, 0.5)[level - 1]
    for g in geoms:
        rgb = defaults.geom_rgba[g, :3] + shift * _unit(rng, 3)
        model.geom_rgba[g, :3] = np.clip(rgb, 0.05, 0.95)
    materials = [model.material(name).id for name in TEXTURED_MATERIALS]
    backdrop, floor = (model.geom(name).id for name in SCENERY_GEOMS)
    shown = [backdrop] + ([floor] if level >= 2 else [])
    for g in shown:
        model.geom_rgba[g] = (*rng.uniform(0.2, 0.9, 3), 1.0)
        if level >= 3:
            model.geom_matid[g] = materials[rng.integers(len(materials))]
    if level >= 2:
        model.geom_matid[geoms[0]] = materials[rng.integers(len(materials))]


# ------------------------------------------------------------------------------------------------ initial states
def perturb_hand(layout: dict, level: int, rng: np.random.Generator) -> dict:
    """The end-effector starts 3 / 6 / 9 cm away (in 3-D) and turned 10 / 20 / 30 degrees."""
    x, y, z, yaw = layout["hand"]
    offset = 0.03 * level * _unit(rng, 3)
    out = dict(layout)
    out["hand"] = (float(np.clip(x + offset[0], -0.25, 0.25)), float(np.clip(y + offset[1], -0.25, 0.1)),
                   float(np.clip(z + offset[2], 0.1, 0.3)), float(yaw + np.deg2rad(10.0 * level) * rng.choice([-1, 1])))
    return out


def perturb_layout(layout: dict, objects: tuple[str, ...], level: int, rng: np.random.Generator, fits) -> dict:
    """Move each of ``objects`` 4 / 7 / 10 cm from its held-out position, in the first of 64 random directions where
    ``fits(name, x, y, layout)`` (on the table, clear of everything else); an object with no free direction stays.
    Then add 1 / 2 / 4 of the distractors (``scene.DISTRACTORS``), each at the first of 200 random spots on the
    visible table where it fits (a distractor with no free spot is left out)."""
    out = dict(layout)
    distance = (0.04, 0.07, 0.10)[level - 1]
    for name in objects:
        x, y, *rest = out[name]
        for angle in rng.permutation(64) * (2 * np.pi / 64):
            nx, ny = x + distance * np.cos(angle), y + distance * np.sin(angle)
            if fits(name, nx, ny, out):
                out[name] = (float(nx), float(ny), *rest)
                break
    for name in rng.permutation(DISTRACTORS)[: (1, 2, 4)[level - 1]]:
        for x, y in zip(rng.uniform(*VISIBLE_TABLE[0], 200), rng.uniform(*VISIBLE_TABLE[1], 200)):
            if fits(str(name), x, y, out):
                out[str(name)] = (float(x), float(y))
                break
    return out


__all__ = ["DIMENSIONS", "DIMENSION_VERSIONS", "LEVELS", "PerturbationError", "SceneDefaults", "format_perturbations", "noisy_image",
           "noisy_proprio", "parse_perturbations", "perturb_cameras", "perturb_hand", "perturb_instruction",
           "perturb_layout", "perturb_lighting", "perturb_table", "perturbation_rng", "perturbation_version"]
