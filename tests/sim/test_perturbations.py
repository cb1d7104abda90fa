"""Evaluation-time perturbations of tabletop: each changes what it claims and nothing else, level 0 is exactly the
unperturbed env, every draw is deterministic per (task, held-out state), and nothing perturbs a training state."""

from __future__ import annotations

import numpy as np
import pytest

from srpo.sim.tabletop.env import TabletopEnv
from srpo.sim.tabletop.perturbations import DIMENSIONS, PerturbationError, parse_perturbations, perturb_instruction
from srpo.sim.tabletop.scene import MOVABLE_OBJECTS

TASK, STATE = "place_red_cube_in_tray", 3
PUSH = np.array([0.6, 0.3, -0.2, 0.0, 0.0, 0.1, 1.0])  # a few steps of motion after the reset


def _episode(perturb, task=TASK, state=STATE, steps=3):
    """Observations, infos and the simulator's state (object and hand poses) at reset and after ``steps`` actions."""
    env = TabletopEnv(task=task, image_size=48, perturb=perturb)
    try:
        obs, info = env.reset(options={"split": "heldout", "init_state_id": state})
        frames, infos = [obs], [info]
        poses = [np.concatenate([env.sim.object_pos(o) for o in MOVABLE_OBJECTS] + [env.sim.grip_pos()])]
        for _ in range(steps):
            obs, _, _, _, info = env.step(PUSH)
            frames.append(obs)
            infos.append(info)
            poses.append(np.concatenate([env.sim.object_pos(o) for o in MOVABLE_OBJECTS] + [env.sim.grip_pos()]))
        return frames, infos, np.stack(poses), env.init_state.layout
    finally:
        env.close()


@pytest.fixture(scope="module")
def plain():
    return _episode(None)


def _same_images(a, b) -> bool:
    return all(np.array_equal(x[c], y[c]) for x, y in zip(a, b) for c in ("agentview", "wrist"))


def _same_proprio(a, b) -> bool:
    return all(np.array_equal(x["proprio"], y["proprio"]) for x, y in zip(a, b))


@pytest.mark.parametrize("dim", list(DIMENSIONS))
def test_level_zero_is_exactly_the_unperturbed_env(plain, dim):
    frames, infos, poses, layout = _episode(f"{dim}:0")
    assert _same_images(frames, plain[0]) and _same_proprio(frames, plain[0])
    assert np.array_equal(poses, plain[2]) and layout == plain[3]
    assert [i["instruction"] for i in infos] == [i["instruction"] for i in plain[1]]


# what each dimension may change: images, proprio, physical poses (the layout and the trajectory), instruction
CHANGES = {
    "camera": {"images"},
    "lighting": {"images"},
    "table": {"images"},
    "noise": {"images", "proprio"},
    "robot_init": {"images", "proprio", "poses"},
    "layout": {"images", "poses"},
    "language": {"instruction"},
}


@pytest.mark.parametrize("dim", list(DIMENSIONS))
@pytest.mark.parametrize("level", [1, 3])
def test_each_dimension_changes_what_it_claims_and_nothing_else(plain, dim, level):
    frames, infos, poses, layout = _episode(f"{dim}:{level}")
    changed = {
        "images": not _same_images(frames, plain[0]),
        "proprio": not _same_proprio(frames, plain[0]),
        "poses": not np.array_equal(poses, plain[2]),
        "instruction": infos[0]["instruction"] != plain[1][0]["instruction"],
    }
    assert {k for k, v in changed.items() if v} == CHANGES[dim]
    if dim == "layout":  # the movable objects moved (and distractors came), the furniture did not
        assert any(layout[o][:2] != plain[3][o][:2] for o in MOVABLE_OBJECTS)
        assert len(set(layout) - set(plain[3])) == {1: 1, 3: 4}[level]
        assert all(layout[f] == plain[3][f] for f in ("tray", "square", "cabinet", "button_base"))
    if dim == "robot_init":
        assert layout["hand"] != plain[3]["hand"]
        assert all(layout[o] == plain[3][o] for o in MOVABLE_OBJECTS)
    if dim == "noise":  # sensor noise only: the physics is untouched
        assert np.array_equal(poses, plain[2])


def test_the_scenery_is_invisible_and_inert_until_a_perturbation_shows_it():
    """The backdrop, floor, textures and distractors are in every scene, so an unperturbed scene must render and
    simulate bit for bit as one built without them (a far-parked body would otherwise move the renderer's clip
    planes, and a solid one could touch something)."""
    from srpo.sim.tabletop.physics import TabletopSim
    from srpo.sim.tabletop.tasks import get_task

    layout = get_task(TASK).initial_state("heldout", STATE).layout
    sims = TabletopSim(image_size=48), TabletopSim(image_size=48, scenery=False)
    try:
        assert sims[0].model.ngeom > sims[1].model.ngeom and sims[0].model.nq == sims[1].model.nq
        for attr in ("extent", "center", "meanmass", "meansize", "meaninertia"):
            assert np.array_equal(getattr(sims[0].model.stat, attr), getattr(sims[1].model.stat, attr)), attr
        for sim in sims:
            sim.reset(layout)
        rng = np.random.default_rng(0)
        for step in range(40):
            if step % 10 == 0:
                for cam in ("agentview", "wrist"):
                    assert np.array_equal(sims[0].render(cam), sims[1].render(cam)), (step, cam)
            action = np.r_[rng.uniform(-1, 1, 6), 1.0 if step > 20 else -1.0]
            for sim in sims:
                sim.apply_action(action)
            assert np.array_equal(sims[0].data.qpos, sims[1].data.qpos), step
    finally:
        for sim in sims:
            sim.close_renderer()


def test_table_levels_add_a_background_then_textures():
    from srpo.sim.tabletop.scene import SCENERY_GEOMS

    env = TabletopEnv(task=TASK, image_size=48)
    m = env.sim.model
    table, (backdrop, floor) = m.geom("table").id, (m.geom(n).id for n in SCENERY_GEOMS)
    seen = {}
    try:
        for level in (0, 1, 2, 3):
            env.perturb = parse_perturbations(f"table:{level}")
            env.reset(options={"split": "heldout", "init_state_id": STATE})
            seen[level] = (m.geom_rgba[backdrop, 3], m.geom_rgba[floor, 3], m.geom_matid[table],
                           m.geom_matid[backdrop], m.geom_matid[floor])
    finally:
        env.close()
    assert seen[0] == (0.0, 0.0, -1, -1, -1)  # restored after the perturbed resets: nothing accumulates
    assert seen[1][:2] == (1.0, 0.0) and seen[1][2:] == (-1, -1, -1)  # a plain-coloured backdrop
    assert seen[2][:2] == (1.0, 1.0) and seen[2][2] >= 0 and seen[2][3:] == (-1, -1)  # + a textured table, a floor
    assert seen[3][:2] == (1.0, 1.0) and min(seen[3][2:]) >= 0  # everything textured


def test_layout_levels_add_solid_distractors_on_free_spots():
    from srpo.sim.tabletop.scene import DISTRACTOR_HALF_HEIGHT, DISTRACTORS
    from srpo.sim.tabletop.tasks import placement_ok

    for level, count in ((1, 1), (2, 2), (3, 4)):
        env = TabletopEnv(task=TASK, image_size=48, perturb=f"layout:{level}")
        try:
            env.reset(options={"split": "heldout", "init_state_id": STATE})
            layout, m, d = env.init_state.layout, env.sim.model, env.sim.data
            placed = [n for n in DISTRACTORS if n in layout]
            assert len(placed) == count
            for name in placed:  # on the table, clear of everything else, visible and solid
                rest = {k: v for k, v in layout.items() if k != name}
                assert placement_ok(name, *layout[name], rest)
                g = m.geom(name).id
                assert np.allclose(d.geom_xpos[g], (*layout[name], DISTRACTOR_HALF_HEIGHT[name]))
                assert m.geom_rgba[g, 3] == 1.0 and m.geom_contype[g] == 1 and m.geom_conaffinity[g] == 1
            for name in set(DISTRACTORS) - set(placed):  # the others stay parked, hidden and inert
                g = m.geom(name).id
                assert d.geom_xpos[g][2] < -0.5 and m.geom_rgba[g, 3] == 0.0 and m.geom_contype[g] == 0
        finally:
            env.close()
    # solid: a gripper lowered onto a distractor rests on it (the palm's underside on its top; the fingers, closing
    # as it comes down, may straddle it)
    env = TabletopEnv(task=TASK, image_size=48, perturb="layout:1")
    try:
        env.reset(options={"split": "heldout", "init_state_id": STATE})
        name = next(n for n in DISTRACTORS if n in env.init_state.layout)
        x, y = env.init_state.layout[name]
        for _ in range(60):
            grip = env.sim.grip_pos()
            target = np.array([x, y, grip[2] if np.hypot(grip[0] - x, grip[1] - y) > 0.005 else 0.0])
            env.sim.apply_action(np.r_[np.clip((target - grip) / 0.02, -1, 1), 0, 0, 0, 1.0])
        palm = env.sim.model.geom("palm").id
        underside = env.sim.data.geom_xpos[palm][2] - env.sim.model.geom_size[palm][2]
        assert underside > 2 * DISTRACTOR_HALF_HEIGHT[name] - 0.005
        d, g = env.sim.data, env.sim.model.geom(name).id
        touching = {int(c.geom2 if c.geom1 == g else c.geom1) for c in d.contact[: d.ncon] if g in (c.geom1, c.geom2)}
        assert palm in touching  # a contact the solver resolves, not a pass-through
    finally:
        env.close()


def test_perturbations_are_deterministic_per_state_and_differ_between_states():
    spec = "camera:2,lighting:1,noise:1,layout:2,robot_init:1,language:3"
    a, b = _episode(spec), _episode(spec)
    assert _same_images(a[0], b[0]) and _same_proprio(a[0], b[0]) and np.array_equal(a[2], b[2])
    assert a[1][0]["instruction"] == b[1][0]["instruction"]
    other = _episode(spec, state=STATE + 1)
    assert other[1][0]["instruction"] != a[1][0]["instruction"] or other[3] != a[3]


def test_a_reused_env_applies_the_same_perturbation_every_reset():
    """Scene values are restored before each perturbation: nothing accumulates over episodes."""
    env = TabletopEnv(task=TASK, image_size=48, perturb="camera:3,lighting:3,table:3")
    try:
        first, _ = env.reset(options={"split": "heldout", "init_state_id": 1})
        env.reset(options={"split": "heldout", "init_state_id": 7})
        again, _ = env.reset(options={"split": "heldout", "init_state_id": 1})
    finally:
        env.close()
    assert all(np.array_equal(first[c], again[c]) for c in ("agentview", "wrist"))


def test_a_training_state_is_never_perturbed():
    env = TabletopEnv(task=TASK, image_size=48, perturb="lighting:1")
    try:
        with pytest.raises(ValueError, match="held-out states only"):
            env.reset(options={"split": "train", "init_state_id": 0})
    finally:
        env.close()
    unperturbed = TabletopEnv(task=TASK, image_size=48, perturb="lighting:0")  # level 0 perturbs nothing
    unperturbed.reset(options={"split": "train", "init_state_id": 0})
    unperturbed.close()


@pytest.mark.parametrize("spec, message", [
    ("fog:1", "unknown perturbation dimension 'fog'; valid: camera, lighting, table, noise, robot_init, layout, "
              "language"),
    ("camera:4", r"camera: level must be one of \(0, 1, 2, 3\)"),
    ("camera", r"camera: level must be one of"),
    ("camera:1,camera:2", "camera is given twice"),
])
def test_a_bad_dimension_or_level_names_the_valid_ones(spec, message):
    with pytest.raises(PerturbationError, match=message):
        parse_perturbations(spec)
    with pytest.raises(PerturbationError):
        TabletopEnv(task=TASK, image_size=48, perturb=spec)


def test_language_levels_paraphrase_then_substitute_then_corrupt():
    rng = np.random.default_rng(0)
    text = "stack the red cube on the blue cube"
    assert perturb_instruction(text, 1, rng) == "set the red cube on top of the blue cube"
    assert perturb_instruction(text, 2, rng) == "set the crimson block on top of the navy block"
    corrupted = perturb_instruction(text, 3, rng)
    assert sorted(corrupted.split()) != sorted(text.split()) and len(corrupted.split()) == len(text.split())


# ------------------------------------------------------------------------------------------ instruction probe
def _expert_runner(follow: str):
    """A ``run_policy_episodes`` stand-in that runs the scripted expert in the real simulator: for the instructed
    task (``follow="instructed"``) or, ignoring the instruction, for the layout's own task."""
    from srpo.sim.tabletop.experts import make_expert
    from srpo.sim.tabletop.tasks import get_task

    def run(policy, jobs, split, workers, execute_steps, temperature, seed, on_episode=None, **_):
        env = TabletopEnv(image_size=32)
        results = []
        try:
            for task, state, extra in jobs:
                _, info = env.reset(options={"task": task, "split": split, "init_state_id": state, **extra})
                acting = task if follow == "instructed" else extra["layout_of"]
                expert = make_expert(get_task(acting))
                for _ in range(env.max_steps):
                    _, _, terminated, truncated, info = env.step(expert.act(env.sim))
                    done_other = follow != "instructed" and info["layout_task_success"]
                    if terminated or truncated or done_other:
                        break
                results.append({"task": task, "init_state_id": state, "success": bool(info["success"]),
                                "layout_task_success": bool(info["layout_task_success"]), "length": env.steps})
                if on_episode:
                    on_episode(results[-1])
        finally:
            env.close()
        return results, [], []

    return run


def test_the_probe_scores_an_expert_for_the_instructed_task_as_following_it(tmp_path):
    from types import SimpleNamespace

    from srpo_trainer.evaluate import EvalConfig, instruction_probe

    cfg = EvalConfig(tasks=["reach_red_cube", "press_button", "open_drawer"], episodes_per_task=3, gifs=0)
    policy = SimpleNamespace(version="scripted_expert")
    follows = instruction_probe(policy, cfg, tmp_path / "follows", progress=False, runner=_expert_runner("instructed"))
    assert list(follows["pairs"]) == ["reach_red_cube -> press_button", "press_button -> open_drawer",
                                      "open_drawer -> reach_red_cube"]
    assert follows["overall"]["instructed"] == 1.0 and follows["overall"]["episodes"] == 9
    assert (tmp_path / "follows" / "probe.json").is_file() and (tmp_path / "follows" / "probe.png").stat().st_size
    ignores = instruction_probe(policy, cfg, None, progress=False, runner=_expert_runner("layout"))
    assert ignores["overall"]["original"] == 1.0 and ignores["overall"]["instructed"] < 0.5


def test_the_layout_of_option_starts_from_the_other_tasks_state_with_this_tasks_goal():
    env = TabletopEnv(image_size=32)
    try:
        _, own = env.reset(options={"task": "press_button", "split": "heldout", "init_state_id": 2})
        own_layout = env.init_state.layout
        _, info = env.reset(options={"task": "press_button", "split": "heldout", "init_state_id": 2,
                                     "layout_of": "reach_red_cube"})
        assert info["instruction"] == own["instruction"] and info["layout_task"] == "reach_red_cube"
        assert env.init_state.layout != own_layout and info["layout_task_success"] is False
    finally:
        env.close()


def test_eval_with_perturbations_and_the_probe_write_their_files_and_refuse_training_states(tmp_path, tiny_checkpoint):
    import json
    import subprocess
    import sys

    def srpo(*args):
        return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, timeout=300)

    r = srpo("eval", "--policy", str(tiny_checkpoint), "--tasks", "reach_red_cube", "--episodes-per-task", "2",
             "--perturb", "camera:1,language:2", "--out", str(tmp_path / "ev"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert summary["config"]["perturb"] == "camera:1,language:2" and summary["episodes"] == 2
    assert summary["perturb_version"] == "camera@1,language@1"
    assert (tmp_path / "ev" / "eval.png").stat().st_size and (tmp_path / "ev" / "episodes.gif").stat().st_size
    bad = srpo("eval", "--policy", str(tiny_checkpoint), "--split", "train", "--perturb", "camera:1",
               "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "held-out states only" in bad.stderr
    unknown = srpo("eval", "--policy", str(tiny_checkpoint), "--perturb", "fog:1", "--out", str(tmp_path / "u"))
    assert unknown.returncode != 0 and "valid: camera, lighting" in unknown.stderr
    probe = srpo("eval", "--policy", str(tiny_checkpoint), "--tasks", "reach_red_cube,press_button",
                 "--episodes-per-task", "2", "--probe", "--perturb", "lighting:1", "--out", str(tmp_path / "probe"))
    assert probe.returncode == 0, probe.stderr
    report = json.loads((tmp_path / "probe" / "probe.json").read_text())  # through the real rollout engine
    assert report["overall"]["episodes"] == 4 and list(report["pairs"]) == ["reach_red_cube -> press_button",
                                                                           "press_button -> reach_red_cube"]
    sheet = srpo("sim", "render", "--perturb", "all", "--size", "48", "--out", str(tmp_path / "sheet.png"))
    assert sheet.returncode == 0, sheet.stderr
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_the_paired_relative_drop_resamples_states_jointly():
    from srpo_trainer.evaluate import relative_drop

    base = np.array([1, 1, 0, 1, 0, 1, 1, 0] * 5)
    same = relative_drop(base, base.copy(), paired=True)
    assert same["relative_drop"] == 0.0 and same["ci95"] == [0.0, 0.0]  # identical outcomes: no spread at all
    half = base * np.array([1, 0] * 20)  # every second success lost
    drop = relative_drop(base, half, paired=True)
    assert drop["relative_drop"] == pytest.approx(1 - half.mean() / base.mean())
    assert drop["ci95"][0] < drop["relative_drop"] < drop["ci95"][1]
    unpaired = relative_drop(base, half)
    assert unpaired["ci95"][1] - unpaired["ci95"][0] > drop["ci95"][1] - drop["ci95"][0]
    with pytest.raises(ValueError, match="equal counts"):
        relative_drop(base, half[:-1], paired=True)
