"""``srpo demo --smoke``: every stage of the main job at toy size, through real ROS 2 nodes (CI runs this)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.ros.conftest import ros_env


def test_demo_smoke_runs_every_stage(ros, tmp_path):
    domain, _, _ = ros
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "srpo_cli", "demo", "--smoke", "--out", str(out)],
                       env=ros_env(domain), capture_output=True, text=True, timeout=900, cwd=tmp_path)
    bringup = out / "loop" / "logs" / "bringup.log"
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + (bringup.read_text()[-2000:]
                                                                      if bringup.exists() else "")
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert stage in r.stdout
    assert len(list((out / "demos").rglob("*.mcap"))) == 4  # 2 tasks x 2 demos
    assert (out / "sft" / "final" / "config.json").is_file()
    summary = json.loads((out / "srpo" / "summary.json").read_text())
    assert summary["eval_before"] is not None and summary["eval_after"] is not None
    assert (out / "before_after.png").stat().st_size > 0
    loop = json.loads((out / "loop" / "loop.json").read_text())
    (row,) = loop["rounds"]
    assert row["episodes"] == 2 and row["labelled"] == 2  # recorded through the ROS 2 recorder, labelled by the sim
    assert row["acted"].startswith("rl:srpo@")  # the loop started from the SRPO policy, exported and published
    assert "push" in row and "closed loop:" in r.stdout
    # a re-run finds every stage cached and finishes quickly
    again = subprocess.run([sys.executable, "-m", "srpo_cli", "demo", "--smoke", "--out", str(out)],
                           env=ros_env(domain), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
