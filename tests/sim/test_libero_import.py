"""Importing official LIBERO HDF5 demonstrations: small files in the official layout, written with h5py, read back
through the project's episode reader (round trip, resizing, bad demos skipped, unreadable files, the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from srpo.episodes import EpisodeStore, read_episode  # noqa: E402
from srpo.sim.libero.convention import CONTROL_HZ, proprio_from_hdf5, upright  # noqa: E402
from srpo.sim.libero.hdf5_import import (  # noqa: E402
    import_libero_file,
    import_libero_hdf5,
    read_file_info,
    resize_area,
)

TASK = "pick_up_the_black_bowl_next_to_the_plate_and_place_it_on_the_plate"
INSTRUCTION = "pick up the black bowl next to the plate and place it on the plate"
T, SIZE = 6, 16


def _frames(demo: int, camera: int, size: int = SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8 with a pattern no rotation or flip leaves unchanged: R = pixel index (row-major),
    G = step, B = demo and camera."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.zeros((T, size, size, 3), np.uint8)
    img[..., 0] = (rows * size + cols) % 256
    img[..., 1] = np.arange(T)[:, None, None] * 10
    img[..., 2] = 100 * camera + demo
    return img


def write_libero_hdf5(path: Path, n_demos: int = 2, bddl: str | None = f"libero/bddl_files/libero_spatial/{TASK}.bddl",
                      instruction: str | None = INSTRUCTION, seed: int = 0) -> Path:
    """A file in the official LIBERO layout (``data/demo_N`` with actions, obs/..., states, rewards, dones)."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if instruction is not None:
            data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                     "language_instruction": instruction})
        if bddl is not None:
            data.attrs["bddl_file_name"] = bddl
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation"})
        data.attrs["num_demos"] = n_demos
        for d in range(n_demos):
            g = data.create_group(f"demo_{d}")
            actions = rng.uniform(-1, 1, (T, 7))
            actions[:, 6] = np.where(np.arange(T) < T // 2, -1.0, 1.0)
            g.create_dataset("actions", data=actions)
            obs = g.create_group("obs")
            obs.create_dataset("agentview_rgb", data=_frames(d, 0))
            obs.create_dataset("eye_in_hand_rgb", data=_frames(d, 1))
            obs.create_dataset("ee_pos", data=rng.normal(0, 0.3, (T, 3)))
            obs.create_dataset("ee_ori", data=rng.normal(0, 1.0, (T, 3)))
            obs.create_dataset("gripper_states", data=np.stack([np.full(T, 0.04), np.full(T, -0.04)], 1)
                               + rng.normal(0, 0.001, (T, 2)))
            obs.create_dataset("joint_states", data=rng.normal(0, 1, (T, 7)))
            g.create_dataset("states", data=rng.normal(0, 1, (T, 20)))
            g.create_dataset("rewards", data=np.eye(T)[-1])
            g.create_dataset("dones", data=np.eye(T, dtype=np.uint8)[-1])
    return path


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    return write_libero_hdf5(tmp_path / f"{TASK}_demo.hdf5")


def _by_demo(paths: list[Path]) -> dict[str, object]:
    eps = [read_episode(p) for p in paths]
    return {ep.meta.extra["demo"]: ep for ep in eps}


def test_round_trip_through_the_episode_reader(demo_file, tmp_path):
    out = tmp_path / "episodes"
    written = import_libero_hdf5([demo_file], out, progress=False)
    assert len(written) == 2 and all(p.is_relative_to(out / TASK) for p in written)
    eps = _by_demo(written)
    assert sorted(eps) == ["demo_0", "demo_1"]
    with h5py.File(demo_file, "r") as f:
        for name, ep in eps.items():
            g = f["data"][name]
            m = ep.meta
            assert (m.task, m.instruction, m.suite, m.source) == (TASK, INSTRUCTION, "libero_spatial", "sim")
            assert (m.policy_version, m.success, m.length, m.split) == ("libero_demo", True, T - 1, "train")
            assert m.extra == {"hdf5_file": demo_file.name, "demo": name}
            assert [(c["name"], c["height"], c["width"]) for c in m.spec["cameras"]] == [
                ("agentview", SIZE, SIZE), ("wrist", SIZE, SIZE)]
            np.testing.assert_array_equal(ep.actions, g["actions"][()][:-1].astype(np.float32))
            expected = proprio_from_hdf5(g["obs/ee_pos"][()], g["obs/ee_ori"][()], g["obs/gripper_states"][()])
            np.testing.assert_array_equal(ep.proprio, expected)
            np.testing.assert_allclose(ep.timestamps, np.arange(T) / CONTROL_HZ)
            assert ep.progress is None and ep.frame_steps is None and ep.chunk_steps is None
            for cam, key in (("agentview", "agentview_rgb"), ("wrist", "eye_in_hand_rgb")):
                raw = g["obs"][key][()]
                assert ep.images[cam].shape == (T, SIZE, SIZE, 3)
                np.testing.assert_array_equal(ep.images[cam], raw[:, ::-1, ::-1])  # rotated 180 degrees
                assert ep.images[cam][0, 0, 0, 0] == raw[0, -1, -1, 0] == SIZE * SIZE - 1
                assert not np.array_equal(ep.images[cam], raw)
            assert int(ep.images["wrist"][0, 0, 0, 2]) == 100 + int(name[-1])  # cameras not swapped


def test_reimport_replaces_the_same_episodes(demo_file, tmp_path):
    out = tmp_path / "episodes"
    first = import_libero_hdf5([demo_file], out, progress=False)
    second = import_libero_hdf5([demo_file], out, progress=False)
    assert sorted(first) == sorted(second)
    assert len(EpisodeStore(out).list(strict=True)) == 2
    assert EpisodeStore(out).verify() == []


def test_image_size_resizes_with_area_interpolation(demo_file, tmp_path):
    small = _by_demo(import_libero_hdf5([demo_file], tmp_path / "small", image_size=8, progress=False))
    with h5py.File(demo_file, "r") as f:
        raw = upright(f["data/demo_0/obs/agentview_rgb"][()]).astype(np.float64)
    ep = small["demo_0"]
    assert ep.images["agentview"].shape == ep.images["wrist"].shape == (T, 8, 8, 3)
    assert [(c["height"], c["width"]) for c in ep.meta.spec["cameras"]] == [(8, 8), (8, 8)]
    block_mean = raw.reshape(T, 8, 2, 8, 2, 3).mean(axis=(2, 4))  # halving = the mean of each 2x2 block
    assert np.max(np.abs(ep.images["agentview"] - block_mean)) <= 0.5 + 1e-9
    big = _by_demo(import_libero_hdf5([demo_file], tmp_path / "big", image_size=24, progress=False))
    assert big["demo_1"].images["wrist"].shape == (T, 24, 24, 3)
    assert big["demo_1"].length == T - 1


def test_resize_area_keeps_constant_images_and_bounds():
    img = np.full((2, 10, 10, 3), 77, np.uint8)
    for size in (3, 7, 10, 13, 32):
        out = resize_area(img, size)
        assert out.shape == (2, size, size, 3) and out.dtype == np.uint8 and np.all(out == 77)
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    up = resize_area(ramp, 40)
    assert up.min() == 0 and up.max() == 240 and np.all(np.diff(up[0, :, 0].astype(int)) >= 0)


def _drop(name):
    def mutate(g):
        del g[name]
    return mutate


def _replace(name, fn):
    def mutate(g):
        value = fn(g[name][()])
        del g[name]
        g.create_dataset(name, data=value)
    return mutate


def _nan_at_3(a):
    a = a.copy()
    a[3, 1] = np.nan
    return a


def _too_big(a):
    a = a.copy()
    a[2, 0] = 1.5
    return a


@pytest.mark.parametrize("mutate, reason", [
    (_drop("obs/ee_pos"), "missing dataset 'obs/ee_pos'"),
    (_drop("obs/eye_in_hand_rgb"), "missing dataset 'obs/eye_in_hand_rgb'"),
    (_replace("actions", lambda a: a[:-1]), "mismatched lengths"),
    (_replace("actions", _nan_at_3), "dataset 'actions' has non-finite values (first at step 3)"),
    (_replace("obs/ee_ori", _nan_at_3), "dataset 'obs/ee_ori' has non-finite values"),
    (_replace("actions", _too_big), "actions outside [-1, 1] (max |a| = 1.5, first at step 2)"),
    (_replace("actions", lambda a: a[:, :6]), "dataset 'actions' has shape (6, 6), expected (6, 7)"),
    (_replace("obs/agentview_rgb", lambda a: a.astype(np.float32)), "images 'obs/agentview_rgb' are float32"),
    (_replace("obs/agentview_rgb", lambda a: a[..., 0]), "expected uint8 (T, H, W, 3)"),
])
def test_a_bad_demo_is_skipped_with_its_reason(demo_file, tmp_path, caplog, mutate, reason):
    with h5py.File(demo_file, "a") as f:
        mutate(f["data/demo_1"])
    result = import_libero_file(demo_file, tmp_path / "out", progress=False)
    assert [read_episode(p).meta.extra["demo"] for p in result.written] == ["demo_0"]
    assert len(result.skipped) == 1
    demo, why = result.skipped[0]
    assert demo == "demo_1" and reason in why, why
    assert demo_file.name in caplog.text and "demo_1" in caplog.text and reason in caplog.text


def test_actions_within_the_tolerance_are_clipped(demo_file, tmp_path):
    with h5py.File(demo_file, "a") as f:
        _replace("actions", lambda a: np.where(np.arange(7) == 0, 1.0 + 1e-5, a))(f["data/demo_0"])
    ep = _by_demo(import_libero_hdf5([demo_file], tmp_path / "out", progress=False))["demo_0"]
    assert np.all(ep.actions[:, 0] == 1.0)


def test_unreadable_files_raise_naming_the_file_before_anything_is_written(demo_file, tmp_path):
    text = tmp_path / "notes_demo.hdf5"
    text.write_text("not hdf5")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"notes_demo\.hdf5: not an HDF5 file"):
        import_libero_hdf5([demo_file, text], out, progress=False)
    assert not out.exists() or not list(out.rglob("*.mcap"))  # the good file was not imported either
    empty = tmp_path / "empty.hdf5"
    with h5py.File(empty, "w") as f:
        f.create_group("something_else")
    with pytest.raises(ValueError, match=r"empty\.hdf5: no 'data' group"):
        read_file_info(empty)
    with h5py.File(empty, "a") as f:
        f.create_group("data")
    with pytest.raises(ValueError, match=r"empty\.hdf5: the 'data' group holds no demo_N groups"):
        read_file_info(empty)
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        read_file_info(tmp_path / "missing.hdf5")
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        import_libero_hdf5([demo_file], out, image_size=0, progress=False)


def test_fallbacks_without_bddl_or_instruction_and_unknown_success(tmp_path):
    path = write_libero_hdf5(tmp_path / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5", n_demos=12, bddl=None,
                             instruction=None)
    with h5py.File(path, "a") as f:
        _replace("rewards", np.zeros_like)(f["data/demo_10"])
    info = read_file_info(path)
    assert info.task == "KITCHEN_SCENE3_turn_on_the_stove"
    assert info.instruction == "KITCHEN SCENE3 turn on the stove"
    assert info.suite == "libero"
    assert info.demos == tuple(f"demo_{i}" for i in range(12))  # numeric order, demo_10 after demo_9
    assert read_file_info(path, suite="libero_10").suite == "libero_10"
    eps = _by_demo(import_libero_hdf5([path], tmp_path / "out", suite="libero_10", progress=False))
    assert eps["demo_10"].meta.success is None and eps["demo_9"].meta.success is True
    assert {ep.meta.suite for ep in eps.values()} == {"libero_10"}


def srpo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_imports_files_end_to_end(demo_file, tmp_path):
    other = write_libero_hdf5(tmp_path / "open_the_drawer_demo.hdf5", n_demos=3,
                              bddl="bddl_files/libero_goal/open_the_drawer.bddl", instruction="open the drawer")
    with h5py.File(other, "a") as f:
        _drop("obs/gripper_states")(f["data/demo_2"])
    r = srpo("data", "import-libero", str(demo_file), str(other), "--out", "eps", "--image-size", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f"{demo_file}: 2 demos imported as libero_spatial/{TASK}"
    assert lines[1] == (f"{other}: 2 demos imported as libero_goal/open_the_drawer, 1 skipped "
                        "(demo_2: missing dataset 'obs/gripper_states')")
    assert lines[2] == "imported 4 episodes from 2 files into eps (1 demos skipped)"
    records = EpisodeStore(tmp_path / "eps").list(strict=True)
    assert sorted((r.meta.task, r.meta.extra["demo"]) for r in records) == [
        ("open_the_drawer", "demo_0"), ("open_the_drawer", "demo_1"), (TASK, "demo_0"), (TASK, "demo_1")]
    assert {r.meta.spec["cameras"][0]["height"] for r in records} == {8}

    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"\x00" * 64)
    r = srpo("data", "import-libero", str(demo_file), str(bad), "--out", "eps2", cwd=tmp_path)
    assert r.returncode != 0 and "bad.hdf5: not an HDF5 file" in r.stderr
    assert not (tmp_path / "eps2").exists()
