"""Why the closed loop gains less than the same recipe online: one update at a time, from the same start.

    python benchmarks/loop_diagnosis.py --demos outputs/demos --start outputs/rollout_concentration/sft3/final \\
        --online-run outputs/rollout_concentration/concentrated_seed0 --loop outputs/loop_concentrated/seed_0 \\
        --world-model outputs/si/A50/world_model/final --work outputs/diag --out benchmarks/results

Four first updates of the concentrated recipe (``configs/srpo_concentrated.yaml``), each from the same starting
policy, each evaluated on the same 800 held-out episodes as the start (deterministic actions, paired):

* **online, step 1**: ``srpo train`` for one step, with the online run's own settings (its rollouts, its world model);
* **offline on the online rollouts**: ``srpo train --episodes`` on exactly those 256 rollouts (read back from the
  run's episode files) with the same world model: the offline trainer against the online one, on the same data;
* **offline on the loop's round 1**: the 256 episodes the loop recorded through ROS 2, with the same world model;
* **the loop's round 1 as it ran**: those episodes with the world model the loop fitted itself.

And the loop's versions on *validation* states (train states 10..99, which the loop, rolling out on 0..9, never
saw), beside their held-out success: can a gate on validation states (``srpo loop eval_states=validation``) tell a
good version from a bad one without touching the held-out test? Writes ``loop_diagnosis.json`` and
``loop_diagnosis.png``; every stage is cached in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402
from rollout_concentration import HELDOUT_STATES  # noqa: E402
from self_imitation import TASKS, evaluate, outcomes, paired, sh  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VALIDATION_FIRST, VALIDATION_STATES = 10, 90  # train states 10..99: the loop rolls out on 0..9


def train_once(args, out: Path, config: Path, overrides: list[str] = ()) -> Path:
    """One update from the start (cached): its final checkpoint."""
    if not (out / "final" / "config.json").is_file():
        sh(["srpo", "train", "--config", str(config), "--out", str(out), f"init={args.start}", "steps=1",
            "eval_episodes_per_task=0", f"reward.encoder_path={args.world_model}",
            f"update.regression.demos={args.demos}", *overrides], out.parent / f"{out.name}.log")
    return out / "final"


def offline_overrides(episodes: Path) -> list[str]:
    """The loop's own offline settings (``srpo_cli.loop``), accepting the version that recorded ``episodes``."""
    from srpo.episodes.store import EpisodeStore

    versions = sorted({r.meta.policy_version for r in EpisodeStore(episodes).list()})
    return [f"offline.episodes={episodes}", f"offline.accept_versions=[{','.join(versions)}]",
            "exploration.std_mode=fixed", "exploration.std=0.4", "rollout.temperature=1.0", "seed=0",
            "update.regression.demos_per_task=3", f"rollout.tasks=[{','.join(TASKS)}]"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", required=True)
    ap.add_argument("--start", required=True, help="the starting checkpoint of both the online run and the loop")
    ap.add_argument("--online-run", required=True, help="an online run of the recipe (its config.yaml, rollouts/)")
    ap.add_argument("--loop", required=True, help="a loop run of the recipe from the same start (seed folder)")
    ap.add_argument("--world-model", required=True, help="the world model the online run scored with")
    ap.add_argument("--validation-rounds", default="0,1,5,8", help="loop rounds whose version is evaluated on "
                                                                 "validation states (0: the start)")
    ap.add_argument("--work", default="outputs/diag")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    from srpo.runtime.registry import PolicyRegistry

    work, loop = Path(args.work), Path(args.loop)
    held = lambda policy, name: outcomes(evaluate(policy, "heldout", work / name,  # noqa: E731
                                                  episodes_per_task=HELDOUT_STATES))
    start = held(Path(args.start), "eval_start")
    online_rollouts = Path(args.online_run) / "rollouts" / "step_00001"
    loop_round = loop / "episodes" / "round_000"
    state = json.loads((loop / "loop.json").read_text())
    registry = PolicyRegistry(loop / "registry")
    recipe = REPO / "configs" / "srpo_concentrated.yaml"
    arms = {
        "online, step 1": train_once(args, work / "online_step1", Path(args.online_run) / "config.yaml"),
        "offline on the online rollouts": train_once(args, work / "offline_on_online_step1", recipe,
                                                     offline_overrides(online_rollouts)),
        "offline on the loop's round 1": train_once(args, work / "offline_on_loop_r0_wmA50", recipe,
                                                    offline_overrides(loop_round)),
        "the loop's round 1 as it ran (own world model)":
            registry.get(state["rounds"][0]["active_after"]).path / "checkpoint",
    }
    first_updates = {}
    for name, policy in arms.items():
        cache = "eval_" + (policy.parent.name if policy.name == "final" else "loop_round_000")
        first_updates[name] = paired(start, held(policy, cache))

    versions = {0: state["rounds"][0]["acted"]} | {k: state["rounds"][k - 1]["active_after"]
                                                   for k in range(1, len(state["rounds"]) + 1)}
    validation = {}
    for k in [int(x) for x in args.validation_rounds.split(",")]:
        entry = registry.get(versions[k])
        val = evaluate(entry.path / "checkpoint", "train", work / f"eval_validation_{entry.path.name.split('@')[0]}",
                       extra=[f"first_state={VALIDATION_FIRST}"], episodes_per_task=VALIDATION_STATES)
        after = held(entry.path / "checkpoint", f"eval_heldout_{entry.path.name.split('@')[0]}")
        validation[k] = {"version": versions[k], "validation": float(val["success_rate"]),
                         "validation_ci95": list(val["ci95"]), "heldout": paired(start, after)}
    result = {"machine": machine(), "command": " ".join(sys.argv), "tasks": TASKS, "heldout_episodes": len(start),
              "start_success": float(np.mean(list(start.values()))), "first_updates": first_updates,
              "validation_states": f"train {VALIDATION_FIRST}..{VALIDATION_FIRST + VALIDATION_STATES - 1}",
              "versions_on_validation": validation}
    out = Path(args.out)
    write_json(out / "loop_diagnosis.json", result)
    plot(result, out / "loop_diagnosis.png")
    for name, r in first_updates.items():
        print(f"{name}: {100 * r['change']:+.1f} ({100 * r['change_ci95'][0]:+.1f}..{100 * r['change_ci95'][1]:+.1f})")
    for k, v in validation.items():
        print(f"round {k}: validation {100 * v['validation']:.1f}%, held-out {100 * v['heldout']['after']:.1f}%")


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    left.axhline(0, color="grey", lw=0.8)
    for i, (name, r) in enumerate(result["first_updates"].items()):
        c, (lo, hi) = 100 * r["change"], (100 * v for v in r["change_ci95"])
        left.errorbar(i, c, yerr=[[c - lo], [hi - c]], fmt="o", capsize=4,
                      color="tab:blue" if "online" in name else "tab:green")
    names = list(result["first_updates"])
    left.set_xticks(range(len(names)), [n.replace(" (", "\n(").replace(" on ", "\non ") for n in names], fontsize=7)
    left.set_ylabel("change in held-out success (points)")
    left.set_title(f"one update from the same start ({result['heldout_episodes']} paired held-out episodes, 95% CI)",
                   fontsize=8)
    rounds = sorted(result["versions_on_validation"], key=int)
    v = result["versions_on_validation"]
    val, val_ci = [v[k]["validation"] for k in rounds], [v[k]["validation_ci95"] for k in rounds]
    held, held_ci = [v[k]["heldout"]["after"] for k in rounds], [v[k]["heldout"]["after_ci95"] for k in rounds]
    x = np.arange(len(rounds))
    for off, y, ci, label, colour in ((-0.2, val, val_ci, f"validation ({result['validation_states']})", "tab:orange"),
                                      (0.2, held, held_ci, "held-out (the test)", "tab:purple")):
        y, ci = 100 * np.array(y), 100 * np.array(ci)
        right.bar(x + off, y, 0.4, yerr=[y - ci[:, 0], ci[:, 1] - y], capsize=3, label=label, color=colour)
    right.set_xticks(x, [f"round {k}" if int(k) else "start" for k in rounds])
    right.set_ylabel("success (%), Wilson 95% CI")
    right.set_title("the loop's versions: do validation states rank them as the held-out test does?", fontsize=8)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
