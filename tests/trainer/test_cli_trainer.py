"""``srpo sft`` and ``srpo eval`` as a user runs them (separate processes, real files)."""

import json
import subprocess
import sys

import pytest


def srpo(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_sft_then_eval_from_the_command_line(demo_store, tmp_path):
    run = tmp_path / "run"
    r = srpo("sft", "--data", str(demo_store.root), "--out", str(run), "steps=20", "batch_size=8", "checkpoint_every=10",
             "policy.d_model=64", "policy.n_layers=1", "policy.cnn_channels=[16, 16, 32]")
    assert r.returncode == 0, r.stderr
    assert (run / "final" / "model.safetensors").exists() and (run / "checkpoints" / "step_0000010").is_dir()
    assert list((run / "tb").glob("events.out.tfevents.*"))
    again = srpo("sft", "--data", str(demo_store.root), "--out", str(run), "steps=20", "batch_size=8",
                 "checkpoint_every=10", "policy.d_model=64", "policy.n_layers=1", "policy.cnn_channels=[16, 16, 32]")
    assert again.returncode == 0 and "resuming" in again.stdout

    out = tmp_path / "eval"
    r = srpo("eval", "--policy", str(run / "final"), "--suite", "tabletop", "--episodes-per-task", "1", "--split",
             "heldout", "--tasks", "press_button,reach_red_cube", "--out", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "eval.json").read_text())
    assert set(result["per_task"]) == {"press_button", "reach_red_cube"} and result["episodes"] == 2
    assert (out / "eval.png").exists() and (out / "episodes.gif").exists()

    # a YAML config and key=value overrides are not overridden by the flags' defaults
    config = tmp_path / "eval.yaml"
    config.write_text("episodes_per_task: 2\nsplit: train\ntasks: [press_button]\ngifs: 0\n")
    r = srpo("eval", "--policy", str(run / "final"), "--config", str(config), "--out", str(tmp_path / "e2"),
             "workers=1")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert result["episodes"] == 2 and result["config"]["split"] == "train" and result["config"]["workers"] == 1
    # a flag wins over the YAML, and a key=value override wins over a flag
    r = srpo("eval", "--policy", str(run / "final"), "--config", str(config), "--out", str(tmp_path / "e3"),
             "--episodes-per-task", "1", "--split", "heldout", "split=train")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "e3" / "eval.json").read_text())
    assert result["episodes"] == 1 and result["config"]["split"] == "train"


@pytest.mark.parametrize(
    "args, message",
    [
        (("sft", "--data", "nowhere", "--out", "r", "steps=1"), "no matching episodes"),
        (("sft", "--out", "r", "steps=-1"), "steps must be >= 1"),
        (("sft", "--out", "r", "learning_rate=1"), "unknown field"),
        (("eval", "--policy", "nowhere", "--out", "e"), "no such policy directory"),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path, args, message):
    r = srpo(*args, cwd=tmp_path)
    assert r.returncode != 0 and message in r.stderr, r.stderr
