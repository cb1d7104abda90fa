"""The ``srpo`` command line, run as a user would (separate processes, real files)."""

import subprocess
import sys

import pytest

from srpo.episodes import EpisodeStore


def srpo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_sim_list_shows_every_task():
    r = srpo("sim", "list")
    assert r.returncode == 0, r.stderr
    for name in ("open_drawer", "stack_red_cube_on_blue_cube", "press the orange button"):
        assert name in r.stdout


def test_demos_render_and_store_read_back(tmp_path):
    out = tmp_path / "demos"
    r = srpo("sim", "demos", "--suite", "tabletop", "--per-task", "2", "--split", "train", "--out", str(out),
             "--tasks", "press_button,open_drawer", "--workers", "2")
    assert r.returncode == 0, r.stderr
    records = EpisodeStore(out).list()
    assert sorted((x.meta.task, x.meta.init_state_id) for x in records) == [
        ("open_drawer", 0), ("open_drawer", 1), ("press_button", 0), ("press_button", 1)]
    assert all(x.meta.success and x.meta.source == "sim" and x.meta.split == "train" for x in records)

    again = srpo("sim", "demos", "--per-task", "2", "--out", str(out), "--tasks", "press_button,open_drawer")
    assert again.returncode == 0 and "4 episodes already" in again.stdout
    assert len(EpisodeStore(out).list()) == 4

    gif = tmp_path / "ep.gif"
    r = srpo("sim", "render", "--episode", str(records[0].path), "--out", str(gif))
    assert r.returncode == 0, r.stderr
    import imageio.v2 as imageio

    frames = imageio.mimread(gif)
    assert len(frames) == records[0].meta.length + 1 and frames[0].shape[1] == 128  # two 64-px cameras

    r = srpo("episodes", "list", str(out), "--success", "true")
    assert r.returncode == 0 and "open_drawer" in r.stdout
    r = srpo("episodes", "verify", str(out))
    assert r.returncode == 0 and "4 intact, 0 damaged" in r.stdout
    records[0].path.write_bytes(records[0].path.read_bytes()[:500])
    r = srpo("episodes", "verify", str(out))
    assert r.returncode == 1 and str(records[0].path) in r.stderr


def test_render_expert_rollout_to_gif(tmp_path):
    r = srpo("sim", "render", "--task", "reach_red_cube", "--size", "48", "--out", str(tmp_path / "r.gif"))
    assert r.returncode == 0, r.stderr
    assert "success=True" in r.stdout and (tmp_path / "r.gif").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("sim", "demos", "--per-task", "1", "--out", "x", "--tasks", "fly"), "unknown tabletop task 'fly'"),
        (("sim", "demos", "--per-task", "101", "--out", "x", "--tasks", "open_drawer"), "exceeds the 100 train"),
        (("sim", "demos", "--suite", "metaworld", "--per-task", "1", "--out", "x"), "not available"),
        (("sim", "render", "--task", "fly", "--out", "x.gif"), "unknown tabletop task"),
    ],
)
def test_bad_arguments_fail_with_a_clear_message(tmp_path, args, message):
    r = srpo(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
