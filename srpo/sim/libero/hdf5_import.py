"""Import official LIBERO (robomimic-layout) HDF5 demonstrations as the project's episode files.

``srpo data import-libero FILE.hdf5... --out DIR`` runs :func:`import_libero_hdf5`: each demo of each file becomes
one episode in the store at ``DIR`` (``DIR/<task>/<episode_id>.mcap``), built with ``EpisodeBuilder`` and written
atomically by ``write_episode``, so SFT, the world model and the reward read LIBERO's demos like any other episode.

How an HDF5 demo maps onto the schema (``srpo/episodes/schema.py``):

- A demo stores T observations and T actions, observation t being the one *before* action t. An episode holds L
  actions and L+1 observations, so it takes observations 0..T-1 and actions 0..T-2: the last action's resulting
  observation is not in the file, and that action is dropped.
- Observations follow ``convention.py``: both cameras rotated upright (``upright``), proprio from ``ee_pos``,
  ``ee_ori`` (axis-angle) and ``gripper_states`` (``proprio_from_hdf5``), a frame at every step, observation t at
  ``t / CONTROL_HZ`` seconds. Actions pass through unchanged (LIBERO's [-1, 1] convention is the spec's; values a
  hair outside, within ``ACTION_TOLERANCE``, are clipped).
- Images keep the file's resolution (which must then be square and the same for both cameras) unless
  ``image_size`` asks for another, to match a policy's spec: frames are then resized with area interpolation
  (pixel-area averaging when shrinking, bilinear when enlarging, as OpenCV's ``INTER_AREA``). The spec is
  ``libero_spec(size)``.
- Metadata: ``source="sim"`` (the schema knows only ``sim`` and ``robot``; LIBERO's demos were teleoperated in
  simulation), ``policy_version="libero_demo"``, ``split="train"`` (what SFT reads by default), ``suite`` from the
  BDDL file's folder (``libero_spatial``...) unless given, ``task`` the BDDL file's stem (else the HDF5 file name
  without ``_demo.hdf5``), ``instruction`` from ``problem_info["language_instruction"]`` (else the task name with
  spaces), ``success`` True when the demo's last reward is 1 (official demos all are), else None (unknown),
  ``extra={"hdf5_file": NAME, "demo": "demo_3"}``. Progress is unknown: the episodes store none.
- ``episode_id`` is derived from suite, task, file name, demo and image size, so importing the same files again
  replaces the same episode files instead of adding duplicates.

A file that cannot be read at all (missing, not HDF5, no ``data`` group, no demos, unparseable ``problem_info``)
raises a ``ValueError`` (``FileNotFoundError`` when missing) naming it, before anything is written. A bad demo (a
missing dataset, mismatched lengths, non-finite values, actions outside [-1, 1], images that are not uint8 HxWx3)
is reported by name with its problem and skipped; the other demos still import.

This module needs numpy and h5py (``pip install 'srpo[libero]'``), not LIBERO itself; tqdm draws a progress bar
when it is installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from srpo.episodes.builder import EpisodeBuilder
from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo.sim.libero.convention import CONTROL_HZ, HDF5_CAMERA_KEYS, libero_spec, proprio_from_hdf5, upright

log = logging.getLogger(__name__)

POLICY_VERSION = "libero_demo"
ACTION_TOLERANCE = 1e-3
"""Actions may exceed [-1, 1] by this much (float round-off in recorded files); they are clipped into the range."""
DEFAULT_SUITE = "libero"
"""The suite when neither ``suite`` nor the BDDL path nor the HDF5 file's folder names one (``libero_*``)."""

_LOW_DIM = {"actions": None, "obs/ee_pos": 3, "obs/ee_ori": 3, "obs/gripper_states": 2}
"""Low-dimensional datasets every demo needs -> their width (None: the spec's action dimension)."""
_DEMO = re.compile(r"demo_(\d+)$")
_ACTION_DIM = libero_spec(64).action.dim


def _h5py():
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("importing LIBERO HDF5 demonstrations needs h5py: pip install 'srpo[libero]'") from exc
    return h5py


@dataclass(frozen=True)
class LiberoFileInfo:
    """What one HDF5 file says about its task (read before any demo)."""

    path: Path
    task: str
    instruction: str
    suite: str
    demos: tuple[str, ...]  # demo_0, demo_1, ... in numeric order


@dataclass
class FileImport:
    """The outcome of importing one file: the episodes written and the demos skipped, with their problem."""

    info: LiberoFileInfo
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (demo, problem)


# --------------------------------------------------------------------------------------------------- file level
def _text(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def _file_info(f: Any, path: Path, suite: str | None) -> LiberoFileInfo:
    data = f.get("data")
    if data is None or not hasattr(data, "keys"):
        raise ValueError(f"{path}: no 'data' group; not a LIBERO/robomimic demonstration file")
    demos = sorted((k for k in data.keys() if _DEMO.match(k)), key=lambda k: int(_DEMO.match(k).group(1)))
    if not demos:
        raise ValueError(f"{path}: the 'data' group holds no demo_N groups")
    attrs = data.attrs
    bddl = Path(_text(attrs["bddl_file_name"])) if "bddl_file_name" in attrs else None
    if bddl is not None and bddl.stem:
        task = bddl.stem
    else:
        name = path.name
        task = name[: -len("_demo.hdf5")] if name.endswith("_demo.hdf5") else path.stem
    problem: dict[str, Any] = {}
    if "problem_info" in attrs:
        try:
            problem = json.loads(_text(attrs["problem_info"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: data.attrs['problem_info'] is not JSON ({exc})") from exc
        if not isinstance(problem, dict):
            raise ValueError(f"{path}: data.attrs['problem_info'] is not a JSON object")
    instruction = str(problem.get("language_instruction") or "").strip()
    if not instruction:
        instruction = task.replace("_", " ")
        log.warning("%s: no language_instruction in problem_info; using %r", path, instruction)
    if suite is None:
        for folder in ((bddl.parent.name if bddl is not None else ""), path.resolve().parent.name):
            if folder.lower().startswith("libero"):
                suite = folder
                break
        else:
            suite = DEFAULT_SUITE
    return LiberoFileInfo(path=path, task=task, instruction=instruction, suite=suite, demos=tuple(demos))


def _open(path: str | os.PathLike) -> Any:
    h5py = _h5py()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read as HDF5 ({exc})") from exc


def read_file_info(path: str | os.PathLike, suite: str | None = None) -> LiberoFileInfo:
    """Check that ``path`` is a readable LIBERO demonstration file and return its task, instruction, suite and
    demos; raise ``ValueError`` (``FileNotFoundError``) naming the file otherwise. Reads no demo data."""
    with _open(path) as f:
        return _file_info(f, Path(path), suite)


# --------------------------------------------------------------------------------------------------- images
def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) interpolation matrix along one axis: pixel-area averaging when shrinking (each output pixel is
    the mean of the input area it covers), bilinear with half-pixel centres when enlarging (OpenCV's INTER_AREA)."""
    w = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    if n_out <= n_in:
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
                w[i, j] = min(hi, j + 1) - max(lo, j)
        return w / scale
    src = np.clip((np.arange(n_out) + 0.5) * scale - 0.5, 0, n_in - 1)
    j0 = np.floor(src).astype(int)
    j1 = np.minimum(j0 + 1, n_in - 1)
    frac = src - j0
    w[np.arange(n_out), j0] += 1 - frac
    w[np.arange(n_out), j1] += frac
    return w


def resize_area(images: np.ndarray, size: int) -> np.ndarray:
    """Frames (..., H, W, 3) uint8 -> (..., size, size, 3) uint8 with area interpolation (see ``_resize_weights``)."""
    h, w = images.shape[-3:-1]
    if (h, w) == (size, size):
        return images
    wh = _resize_weights(h, size).astype(np.float32)  # (size, h)
    wwt = _resize_weights(w, size).T.astype(np.float32)  # (w, size)
    flat_in = images.reshape((-1,) + images.shape[-3:])
    out = np.empty((flat_in.shape[0], size, size, images.shape[-1]), dtype=np.uint8)
    for k in range(0, flat_in.shape[0], 64):  # 64 frames at a time: a whole demo in float32 would take GBs
        x = flat_in[k:k + 64].astype(np.float32).transpose(0, 3, 1, 2)  # (n, c, h, w)
        y = (wh @ x) @ wwt  # (n, c, size, size), two BLAS matmuls
        out[k:k + 64] = np.clip(np.rint(y), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return out.reshape(images.shape[:-3] + out.shape[1:])


# --------------------------------------------------------------------------------------------------- one demo
def _dataset(group: Any, key: str) -> Any:
    item = group.get(key)
    if item is None or not hasattr(item, "shape"):
        raise ValueError(f"missing dataset {key!r}")
    return item


def _read_demo(group: Any, image_size: int | None, action_dim: int) -> tuple[dict[str, Any], int]:
    """Validate one demo group and return its arrays (``actions``, ``proprio``, ``images`` per camera, upright and
    resized, ``rewards`` or None) and the image size; raise ValueError(problem) naming the dataset at fault."""
    cam_keys = {cam: f"obs/{key}" for cam, key in HDF5_CAMERA_KEYS.items()}
    datasets = {key: _dataset(group, key) for key in (*_LOW_DIM, *cam_keys.values())}
    if "rewards" in group:
        datasets["rewards"] = _dataset(group, "rewards")
    lengths = {key: (ds.shape[0] if ds.shape else None) for key, ds in datasets.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError("mismatched lengths: " + ", ".join(f"{k} {n}" for k, n in lengths.items()))
    T = lengths["actions"]
    if T < 2:
        raise ValueError(f"{T} steps; an episode needs at least 2 observations (1 action)")
    for key, width in _LOW_DIM.items():
        want = (T, action_dim if width is None else width)
        if datasets[key].shape != want:
            raise ValueError(f"dataset {key!r} has shape {datasets[key].shape}, expected {want}")
    sizes = {}
    for cam, key in cam_keys.items():
        ds = datasets[key]
        if ds.dtype != np.uint8 or len(ds.shape) != 4 or ds.shape[-1] != 3:
            raise ValueError(f"images {key!r} are {ds.dtype} {ds.shape}, expected uint8 (T, H, W, 3)")
        sizes[cam] = ds.shape[1:3]
    if image_size is None:
        hw = set(sizes.values())
        if len(hw) != 1 or len({*next(iter(hw))}) != 1:
            raise ValueError(f"camera images of sizes {sizes}: without --image-size both must be the same square "
                             "size (pass --image-size N to resize)")
        image_size = int(next(iter(hw))[0])
    arrays = {key: np.asarray(datasets[key][()], dtype=np.float64) for key in _LOW_DIM}
    for key, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            step = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise ValueError(f"dataset {key!r} has non-finite values (first at step {step})")
    actions = arrays["actions"]
    outside = np.abs(actions) > 1.0 + ACTION_TOLERANCE
    if np.any(outside):
        raise ValueError(f"actions outside [-1, 1] (max |a| = {np.max(np.abs(actions)):.4g}, first at step "
                         f"{int(np.argwhere(outside)[0][0])})")
    rewards = None
    if "rewards" in datasets:
        rewards = np.asarray(datasets["rewards"][()], dtype=np.float64)
    return {
        "actions": np.clip(actions, -1.0, 1.0).astype(np.float32),
        "proprio": proprio_from_hdf5(arrays["obs/ee_pos"], arrays["obs/ee_ori"], arrays["obs/gripper_states"]),
        "images": {cam: resize_area(upright(datasets[key][()]), image_size) for cam, key in cam_keys.items()},
        "rewards": rewards,
    }, image_size


def _check_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    libero_spec(int(image_size))  # the spec's own limits (e.g. at least 8x8) raise ValueError now, not per demo
    return int(image_size)


def _episode_id(info: LiberoFileInfo, demo: str, size: int) -> str:
    key = f"{POLICY_VERSION}|{info.suite}|{info.task}|{info.path.name}|{demo}|{size}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def demo_episode(group: Any, info: LiberoFileInfo, demo: str, image_size: int | None = None) -> Episode:
    """The episode of the demo ``group`` (``data/<demo>`` of the file ``info`` describes); raise ``ValueError``
    naming the file, the demo and the problem when the demo breaks the layout."""
    try:
        arrays, size = _read_demo(group, _check_size(image_size), _ACTION_DIM)
        rewards = arrays["rewards"]
        success = True if rewards is not None and np.isclose(rewards[-1], 1.0) else None
        builder = EpisodeBuilder(libero_spec(size).to_dict(), task=info.task, instruction=info.instruction,
                                 source="sim", policy_version=POLICY_VERSION, suite=info.suite, split="train",
                                 extra={"hdf5_file": info.path.name, "demo": demo})
        images = arrays["images"]
        for t in range(arrays["actions"].shape[0]):  # observations 0..T-1, actions 0..T-2 (see the docstring)
            if t:
                builder.act(arrays["actions"][t - 1])
            builder.observe(t / CONTROL_HZ, arrays["proprio"][t], {cam: frames[t] for cam, frames in images.items()})
        episode = builder.finish(success=success)
    except (ValueError, KeyError, TypeError, OSError) as exc:  # EpisodeSchemaError is a ValueError
        raise ValueError(f"{info.path} {demo}: {exc}") from exc
    episode.meta.episode_id = _episode_id(info, demo, size)
    return episode


def _progress_bar(items: Iterable[str], desc: str, enabled: bool) -> Iterable[str]:
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with srpo[sim]; without it, no bar
        return items
    return tqdm(items, desc=desc, unit="demo", leave=False)


def iter_libero_episodes(path: str | os.PathLike, image_size: int | None = None, suite: str | None = None,
                         progress: bool = False) -> Iterator[tuple[str, Episode | ValueError]]:
    """Per demo of ``path`` (numeric order): ``(demo, episode)``, or ``(demo, error)`` for a demo that breaks the
    layout (the error names the file, the demo and the problem). A file that cannot be read raises instead."""
    image_size = _check_size(image_size)
    path = Path(path)
    with _open(path) as f:
        info = _file_info(f, path, suite)
        for demo in _progress_bar(info.demos, path.name, progress):
            try:
                yield demo, demo_episode(f["data"][demo], info, demo, image_size)
            except ValueError as exc:
                yield demo, exc


# --------------------------------------------------------------------------------------------------- files
def import_libero_file(path: str | os.PathLike, out_dir: str | os.PathLike, image_size: int | None = None,
                       suite: str | None = None, progress: bool = True) -> FileImport:
    """Import every demo of one file into the episode store at ``out_dir``; bad demos are logged and skipped."""
    _check_size(image_size)
    info = read_file_info(path, suite)
    result = FileImport(info=info)
    store = EpisodeStore(out_dir)
    for demo, item in iter_libero_episodes(path, image_size, suite, progress):
        if isinstance(item, Episode):
            result.written.append(store.write(item))
        else:
            log.warning("skipping %s", item)
            reason = str(item)
            prefix = f"{info.path} {demo}: "
            result.skipped.append((demo, reason[len(prefix):] if reason.startswith(prefix) else reason))
    return result


def import_libero_hdf5(paths: Iterable[str | os.PathLike], out_dir: str | os.PathLike, image_size: int | None = None,
                       suite: str | None = None, progress: bool = True) -> list[Path]:
    """Import the demos of every file in ``paths`` into the episode store at ``out_dir``; return the files written.

    Every file is checked first (``read_file_info``): one that cannot be read raises before anything is written.
    A bad demo is logged (warning) and skipped; the others import. ``image_size`` resizes the frames (square);
    ``suite`` overrides the suite inferred from the BDDL path."""
    _check_size(image_size)
    paths = [Path(p) for p in paths]
    for p in paths:
        read_file_info(p, suite)
    written: list[Path] = []
    for p in paths:
        written += import_libero_file(p, out_dir, image_size, suite, progress).written
    return written
