"""``srpo sim attempts``, ``srpo worldmodel train`` and ``srpo reward fidelity`` as a user runs them."""

import json
import subprocess
import sys

from srpo.episodes import EpisodeStore


def srpo(*args):
    return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, timeout=600)


def test_attempts_world_model_and_fidelity_from_the_command_line(tmp_path):
    attempts = tmp_path / "attempts"
    r = srpo("sim", "attempts", "--per-task", "2", "--split", "heldout", "--tasks", "reach_red_cube,press_button",
             "--image-size", "32", "--out", str(attempts))
    assert r.returncode == 0, r.stderr
    records = EpisodeStore(attempts).list()
    assert len(records) == 2 * 2 * 9
    assert any(x.meta.success for x in records) and sum(not x.meta.success for x in records) >= 10
    assert any("_stop0.25" in x.meta.policy_version for x in records)
    again = srpo("sim", "attempts", "--per-task", "1", "--out", str(attempts))
    assert again.returncode != 0 and "already holds episodes" in again.stderr

    wm = tmp_path / "wm"
    r = srpo("worldmodel", "train", "--data", str(attempts), "--out", str(wm), "split=heldout", "steps=20",
             "batch_size=16", "checkpoint_every=10", "model.image_size=32", "model.channels=[16, 16, 16]",
             "model.latent_dim=8")
    assert r.returncode == 0, r.stderr
    assert (wm / "final" / "model.safetensors").exists() and list((wm / "tb").glob("events.out.tfevents.*"))

    out = tmp_path / "fid"
    r = srpo("reward", "fidelity", "--data", str(attempts), "--encoder", "builtin,pixels,random", "--encoder-path",
             str(wm / "final"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "fidelity.json").read_text())
    assert [x["encoder"] for x in results] == ["builtin", "pixels", "random"]
    for res in results:
        assert set(res["per_task"]) == {"reach_red_cube", "press_button"}
        assert res["failures"] == sum(not x.meta.success for x in records)
        assert all(0 < p[1] < 0.6 for p in res["points"])
    assert (out / "fidelity.png").stat().st_size > 0

    r = srpo("reward", "fidelity", "--data", str(attempts), "--encoder", "builtin", "--out", str(out))
    assert r.returncode != 0 and "needs a checkpoint path" in r.stderr
