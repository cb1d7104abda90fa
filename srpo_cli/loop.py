"""``srpo loop``: the whole cycle through ROS 2, round after round.

    srpo loop --robot sim --rounds 3 --init runs/sft/final --out runs/loop episodes_per_round=24

1. **bring-up** (once): the arm, policy and recorder nodes (``srpo bringup``) with the active version of the policy
   registry (``OUT/registry``; the ``--init`` checkpoint is exported and published as its first version);
2. **record** ``episodes_per_round`` episodes through the recorder: in sim the loop asks the arm for each episode
   (a task and a TRAIN initial state, cycled over ``tasks``); on a real arm it waits for the operator's labelled
   episodes to appear. The policy node explores at ``temperature`` with ``exploration_std``, the same distribution
   the offline update scores with;
3. **offline SRPO** (``srpo train --episodes``) from the recorded rounds, with the registry's parent links deciding
   which versions' episodes are recent enough;
4. **export** the result to ONNX (checked against PyTorch on recorded observations) and **publish** it in the
   registry (weights, ONNX, manifest with checksums, parent and metrics);
5. optional **gate**: evaluate the candidate and the active version in the simulator (``eval_states``: held-out
   states, or validation states: train states the loop never rolls out); a candidate worse by more than
   ``gate_margin`` is not pushed;
6. **push** the version to the running policy node, which validates it and swaps it in at a chunk boundary, or keeps
   the current one and says why.

Each round prints a row (version that acted, recorded success with its interval, mean progress reward of the
failures, push result, evaluated success) and the loop writes ``loop.json`` and ``loop.png`` (success per round).
A round whose files are complete is not redone: re-running the command resumes at the first unfinished round.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from srpo.config import ConfigError, load_config

LOOP_FILE = "loop.json"


@dataclass
class LoopConfig:
    """``srpo loop`` settings (``key=value`` on the command line; ``train.key=value`` goes to the offline update's
    ``RLConfig``)."""

    robot: str = "sim"
    rounds: int = 3
    episodes_per_round: int = 16
    init: str | None = None
    """The checkpoint the first round acts with (exported and published as the registry's first version)."""
    out: str = "runs/loop"
    train_config: str | None = None
    """YAML of the offline update (``RLConfig``; default ``configs/srpo.yaml``)."""
    tasks: list[str] | None = None
    """sim: the tasks the episodes cycle over (default: every task)."""
    train_states: int = 50
    """sim: episodes start from TRAIN initial states 0..N-1 (held-out states are for evaluation)."""
    group_size: int = 4
    """sim: episodes per prompt (task and initial state) in a round: the offline update groups episodes by their
    initial state, and a group of one has no advantage (GRPO's n)."""
    temperature: float = 1.0
    exploration_std: float = 0.2
    """The robot explores with a fixed std (normalised action units) at ``temperature``; the offline update scores
    with exactly this distribution (``exploration.std_mode=fixed``), so on-policy importance weights are 1."""
    control_hz: float = 20.0
    sim_clock: bool = True
    """sim: the arm runs on a simulated clock in lockstep with the policy (``srpo bringup sim_clock:=true``), so an
    episode takes as long as the policy needs to answer, not real time; false: real time at ``control_hz``. A real
    arm always runs in real time."""
    max_steps: int = 0
    """sim: episode limit in control steps (0: the task's own)."""
    backend: str = "onnxruntime"
    episode_timeout_s: float = 120.0
    """sim: an episode that has not ended by then is abandoned (the recorder closes it unlabelled: excluded)."""
    episode_retries: int = 2
    """sim: how often an episode is asked for again when it did not start, did not end in time, or ended without
    the recorder writing its file (each is counted in the round's row: ``timeouts``, ``lost``)."""
    eval_episodes_per_task: int = 0
    """Simulator states per task on which each new version (and the first) is evaluated; 0: none."""
    eval_states: str = "heldout"
    """Which states those are: ``heldout`` (held-out states 0..N-1) or ``validation`` (TRAIN states the loop never
    rolls out: ``train_states``..``train_states``+N-1). A gate that picks versions on the held-out states makes
    their held-out success a biased estimate; on validation states the held-out states stay an untouched test."""
    gate_margin: float | None = None
    """Push a candidate only if its evaluated success is at least the active version's minus this (needs
    ``eval_episodes_per_task`` > 0); None: always push (the node still validates)."""
    workers: int = 2
    """Simulator processes of the held-out evaluations."""
    ros_config: str | None = None
    """The nodes' parameter file the loop starts from (default ``configs/ros/bringup.yaml``; on a real robot, its
    own: driver topics, safety limits, ``dry_run``). The loop sets only what the cycle needs on top of it."""
    tensorrt: str = "auto"
    """Build a TensorRT engine for each version and publish it beside the ONNX graph: ``auto`` (where TensorRT and a
    GPU are present; the reason is logged otherwise), ``on`` (a failure stops the loop) or ``off``."""
    seed: int = 0
    train_overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from srpo.sim.tabletop.tasks import SPLIT_SIZES, TASKS

        if self.robot not in ("sim", "real"):
            raise ValueError(f"robot must be sim or real, got {self.robot!r}")
        if self.rounds < 1 or self.episodes_per_round < 1 or self.group_size < 1:
            raise ValueError("rounds, episodes_per_round and group_size must be >= 1")
        for t in self.tasks or []:
            if t not in TASKS:
                raise ValueError(f"unknown task {t!r}; available: {sorted(TASKS)}")
        if not 1 <= self.train_states <= SPLIT_SIZES["train"]:
            raise ValueError(f"train_states must be in 1..{SPLIT_SIZES['train']}")
        if not self.temperature > 0 or not self.exploration_std > 0:
            raise ValueError("temperature and exploration_std must be > 0: offline RL needs sampled decisions")
        if self.gate_margin is not None and not self.eval_episodes_per_task:
            raise ValueError("gate_margin needs eval_episodes_per_task > 0 (the gate compares evaluated success)")
        if self.eval_states not in ("heldout", "validation"):
            raise ValueError(f"eval_states must be heldout or validation, got {self.eval_states!r}")
        if self.eval_episodes_per_task > 0:
            eval_config(self, seed=0)  # the evaluation's own checks: e.g. validation states past the train split
        if self.ros_config and not Path(self.ros_config).is_file():
            raise ValueError(f"ros_config {self.ros_config} is not a file")
        if self.tensorrt not in ("auto", "on", "off"):
            raise ValueError(f"tensorrt must be auto, on or off, got {self.tensorrt!r}")
        if self.eval_episodes_per_task < 0 or self.episode_timeout_s <= 0 or self.control_hz <= 0:
            raise ValueError("eval_episodes_per_task must be >= 0, episode_timeout_s and control_hz > 0")
        if self.episode_retries < 0:
            raise ValueError(f"episode_retries must be >= 0, got {self.episode_retries}")


def episode_schedule(cfg: LoopConfig, round_index: int) -> list[dict]:
    """The sim episodes of one round: prompts (tasks in turn, each with a TRAIN state drawn from the round's seed),
    each run ``group_size`` times in a row, ``episodes_per_round`` in all."""
    from srpo.sim.tabletop.tasks import TASKS

    tasks = list(cfg.tasks or TASKS)
    rng = np.random.default_rng([cfg.seed, round_index, 5])
    prompts = -(-cfg.episodes_per_round // cfg.group_size)
    states = rng.integers(cfg.train_states, size=prompts)
    schedule = [{"task": tasks[i % len(tasks)], "split": "train", "init_state_id": int(states[i])}
                for i in range(prompts) for _ in range(cfg.group_size)]
    return schedule[: cfg.episodes_per_round]


def bringup_params(cfg: LoopConfig, root: Path, registry: Path, image_size: int) -> Path:
    """The nodes' parameter file for this loop: the repository defaults with the loop's values on top (one source:
    the exploration the nodes act with is the one the update scores)."""
    import yaml

    from srpo_ros.bringup import default_config

    params = yaml.safe_load(Path(cfg.ros_config or default_config()).read_text())
    arm, policy, recorder = (params[n]["ros__parameters"] for n in ("arm_node", "policy_node", "recorder_node"))
    arm.update(robot=cfg.robot, control_hz=float(cfg.control_hz), split="train", image_size=image_size,
               max_steps=cfg.max_steps, start_episode=False, auto_reset=False)
    policy.update(temperature=float(cfg.temperature), exploration_std=float(cfg.exploration_std),
                  registry=str(registry.resolve()), control_hz=float(cfg.control_hz), backend=cfg.backend)
    recorder.update(out_dir=str((root / "episodes" / "incoming").resolve()), image_size=image_size,
                    source="sim" if cfg.robot == "sim" else "robot", label_from_sim=cfg.robot == "sim")
    path = root / "bringup.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


class Bringup:
    """The node processes (``srpo bringup``), logged to ``OUT/logs/bringup.log``, stopped on ``close``."""

    def __init__(self, cfg: LoopConfig, params: Path, version: str, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.log = open(logs / "bringup.log", "a")
        cmd = [sys.executable, "-m", "srpo_cli", "bringup", f"robot:={cfg.robot}", f"policy:={version}",
               f"backend:={cfg.backend}", f"config:={params}",
               f"sim_clock:={'true' if cfg.sim_clock and cfg.robot == 'sim' else 'false'}"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


class LoopLink:
    """The loop's own node: asks the arm for episodes, pushes versions, hears what the nodes report."""

    def __init__(self, domain: int | None = None) -> None:
        from std_msgs.msg import String

        from srpo_ros import topics
        from srpo_ros.client import GraphClient
        from srpo_ros.common import latched_qos

        self.String, self.topics = String, topics
        self.client = GraphClient("srpo_loop", domain)
        self.info = self.client.listen(String, topics.POLICY_INFO, latched_qos())
        self.results = self.client.listen(String, topics.POLICY_PUSH_RESULT, latched_qos())
        self.announcements = self.client.listen(String, topics.EPISODE_INFO, latched_qos())
        self.request_pub = self.client.node.create_publisher(String, topics.EPISODE_REQUEST, 10)
        self.push_pub = self.client.node.create_publisher(String, topics.POLICY_PUSH, 10)

    def active_version(self) -> str | None:
        with self.client.lock:
            return json.loads(self.info[-1][1].data)["version"] if self.info else None

    def wait_ready(self, version: str, timeout: float, robot: str) -> None:
        """Until the policy node runs ``version`` and (sim) the arm and the recorder listen."""
        node, t = self.client.node, self.topics

        def ready() -> bool:
            acting = bool(self.info) and json.loads(self.info[-1][1].data)["version"] == version
            arm = robot != "sim" or node.count_subscribers(t.EPISODE_REQUEST) >= 1
            recorder = node.count_subscribers(t.EXECUTED_ACTION) >= 1 and node.count_subscribers(t.INSTRUCTION) >= 2
            return acting and arm and recorder and self.push_pub.get_subscription_count() >= 1

        if not self.client.wait_until(ready, timeout):
            raise TimeoutError(f"the nodes did not come up with {version} within {timeout:g} s (see the bring-up log)")

    def _announced(self) -> list[dict]:
        """The arm's episode announcements heard so far (start and end, numbered), oldest first."""
        return [json.loads(m.data) for _, m in self.announcements]

    def run_episode(self, request: dict, timeout: float, start_timeout: float = 10.0) -> bool | None:
        """Ask the simulated arm for one episode; its success, or None if it did not start or end in time.

        The episode is followed on the arm's numbered, latched announcements: the request counts once the arm
        announces an episode numbered above every earlier one, and it is over when that number is announced ended.
        The request itself is volatile, and a publisher that is still matching the arm's subscription on a loaded
        machine loses it, so it is sent once more if nothing starts within ``start_timeout``."""
        with self.client.lock:
            last = max((a.get("episode") or 0 for a in self._announced()), default=0)

        def started() -> bool:
            return any((a.get("episode") or 0) > last for a in self._announced())

        for _ in range(2):
            self.request_pub.publish(self.String(data=json.dumps(request)))
            if self.client.wait_until(started, start_timeout):
                break
        else:
            return None
        with self.client.lock:
            number = next(a["episode"] for a in self._announced() if (a.get("episode") or 0) > last)

        def ended() -> bool:
            return any(a.get("episode") == number and a.get("ended") for a in self._announced())

        if not self.client.wait_until(ended, timeout):
            return None
        with self.client.lock:
            return bool(next(a for a in self._announced() if a.get("episode") == number and a.get("ended"))["success"])

    def push(self, version: str, timeout: float = 120.0, resend_s: float = 15.0) -> dict:
        """Push ``version`` and wait for the node's verdict (accepted, or why not). The push topic is volatile, like
        the episode requests: with no verdict after ``resend_s`` it is sent again (the node ignores a repeat of the
        push it is validating, and answers one of its active version at once)."""
        n = len(self.results)

        def answered() -> bool:
            return any(json.loads(m.data)["pushed"] == version for _, m in self.results[n:])

        deadline = time.monotonic() + timeout
        while True:
            self.push_pub.publish(self.String(data=version))
            left = deadline - time.monotonic()
            if self.client.wait_until(answered, min(resend_s, max(left, 0.0))):
                break
            if time.monotonic() >= deadline:
                return {"pushed": version, "accepted": False,
                        "reason": f"no answer from the policy node in {timeout:g} s"}
        with self.client.lock:
            return next(json.loads(m.data) for _, m in self.results[n:] if json.loads(m.data)["pushed"] == version)

    def close(self) -> None:
        self.client.close()


def _wait_for_files(folder: Path, count: int, timeout: float) -> int:
    """Until ``folder`` holds ``count`` closed episode files (or ``timeout``); returns how many it holds."""
    deadline = time.monotonic() + timeout
    while True:
        n = len([p for p in folder.rglob("*.mcap") if not p.name.startswith(".")])
        if n >= count or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def _collect_round(incoming: Path, target: Path) -> int:
    """Move the closed episode files of a round out of the recorder's folder (rename: atomic, nothing copied)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    moved = 0
    for path in sorted(incoming.rglob("*.mcap")):
        if path.name.startswith("."):
            continue
        dest = staging / path.relative_to(incoming)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(path, dest)
        moved += 1
    staging.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)  # the round appears whole, or not at all
    return moved


def eval_config(cfg: LoopConfig, seed: int):
    """The loop's evaluation: ``eval_episodes_per_task`` states per task, held-out ones or the validation states
    right after the ``train_states`` the loop rolls out (never the states it learns on)."""
    from srpo_trainer.evaluate import EvalConfig

    split, first = ("heldout", 0) if cfg.eval_states == "heldout" else ("train", cfg.train_states)
    return EvalConfig(tasks=cfg.tasks, episodes_per_task=cfg.eval_episodes_per_task, split=split, first_state=first,
                      workers=cfg.workers, seed=seed, gifs=0)


def _evaluate(checkpoint: Path, cfg: LoopConfig, cache: dict, version: str) -> dict | None:
    if not cfg.eval_episodes_per_task:
        return None
    key = version if cfg.eval_states == "heldout" else f"{cfg.eval_states}:{version}"  # a resume may change states
    if key not in cache:
        from srpo_trainer.evaluate import evaluate
        from srpo_trainer.policies import load_policy
        from srpo_trainer.rl.trainer import EVAL_SEED

        summary = evaluate(load_policy(checkpoint), eval_config(cfg, seed=EVAL_SEED), progress=False)
        cache[key] = {"success": summary["success_rate"], "ci95": list(summary["ci95"]),
                      "episodes": [int(e["success"]) for e in summary["episodes_detail"]]}
    return cache[key]


def _stop_on_sigterm():
    """Make SIGTERM (``kill``, a service manager, a container stop) unwind like Ctrl-C, so the ``finally`` that stops
    the node processes runs: they live in their own session and would otherwise outlive the loop. Returns the previous
    handler (None off the main thread, where Python cannot install one)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def run_loop(cfg: LoopConfig, progress: bool = True) -> Path:
    """Run (or resume) the loop; returns its folder."""
    from rich.console import Console

    from srpo.runtime.registry import PolicyRegistry
    from srpo.episodes.store import EpisodeStore
    from srpo_export.to_onnx import export_onnx
    from srpo_trainer.policies import load_policy

    if not cfg.init or not (Path(cfg.init) / "config.json").is_file():
        raise ConfigError(f"init: {cfg.init!r} is not a policy checkpoint (pass --init CKPT)")
    console = Console()
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    registry = PolicyRegistry(root / "registry")
    state_path = root / LOOP_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"rounds": [], "evals": {}}
    state["config"] = asdict(cfg)

    first = load_policy(cfg.init)
    image_size = first.spec.observation.cameras[0].height
    if not registry.entries():
        console.rule("[bold]registry: publishing the starting policy")
        export = export_onnx(cfg.init, root / "exports" / "init")
        engine, _ = _engine(cfg, export, console)
        registry.publish(export, checkpoint_dir=cfg.init, engine_dir=engine, metrics={"source": "init"})
    active = state["rounds"][-1]["active_after"] if state["rounds"] else registry.entries()[0].version
    params = bringup_params(cfg, root, registry.root, image_size)
    incoming = root / "episodes" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    for stale in incoming.rglob("*.mcap"):  # an interrupted round's partial recordings are not mixed into the next
        stale.unlink()

    if len(state["rounds"]) >= cfg.rounds:
        console.print(f"{root}: all {cfg.rounds} rounds are done (loop.json)")
        _print_rounds(state, console)
        _plot(state, root / "loop.png")
        return root
    console.rule(f"[bold]bring-up: {cfg.robot} with {active}")
    previous_term = _stop_on_sigterm()
    bringup = Bringup(cfg, params, active, root / "logs")
    link = None
    try:
        link = LoopLink()
        link.wait_ready(active, 120.0, cfg.robot)
        for r in range(len(state["rounds"]), cfg.rounds):
            row = _run_round(cfg, r, active, link, bringup, registry, root, incoming, state, console, progress,
                             export_onnx, EpisodeStore)
            state["rounds"].append(row)
            active = row["active_after"]
            _save(state_path, state)
            _print_rounds(state, console)
    finally:
        if link is not None:
            link.close()
        bringup.close()
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    _plot(state, root / "loop.png")
    _save(state_path, state)
    console.print(f"loop: {root / LOOP_FILE}, {root / 'loop.png'}; registry: {registry.root}")
    return root


def _run_round(cfg, r, active, link, bringup, registry, root, incoming, state, console, progress, export_onnx,
               EpisodeStore) -> dict:
    from rich.progress import Progress

    from srpo_trainer.rl.config import RLConfig
    from srpo_trainer.rl.offline_trainer import train_offline

    t0 = time.perf_counter()
    console.rule(f"[bold]round {r + 1}/{cfg.rounds}: {cfg.episodes_per_round} episodes with {active}")
    timeouts = lost = 0
    with Progress(console=console, disable=not progress) as bar:
        task = bar.add_task("episodes", total=cfg.episodes_per_round)
        if cfg.robot == "sim":
            for k, request in enumerate(episode_schedule(cfg, r)):
                for _ in range(1 + cfg.episode_retries):
                    if not bringup.alive():
                        raise RuntimeError(f"the nodes stopped (see {root / 'logs' / 'bringup.log'})")
                    before = _wait_for_files(incoming, 0, 0.0)
                    if link.run_episode(request, cfg.episode_timeout_s) is None:
                        timeouts += 1
                        console.print(f"[yellow]episode {k + 1}: the arm did not start or end it in time; "
                                      "asking again")
                        continue
                    if _wait_for_files(incoming, before + 1, 15.0) > before:
                        break
                    lost += 1  # the recorder wrote nothing for it: its log says why
                    console.print(f"[yellow]episode {k + 1}: ended, but the recorder wrote no file (see "
                                  f"{root / 'logs' / 'bringup.log'}); asking again")
                bar.advance(task)
        else:
            console.print(f"waiting for {cfg.episodes_per_round} labelled episodes in {incoming} (start each with "
                          "an instruction; label with /srpo/recorder/label or srpo episodes label)")
            while _wait_for_files(incoming, cfg.episodes_per_round, 5.0) < cfg.episodes_per_round:
                bar.update(task, completed=len(list(incoming.rglob("*.mcap"))))
    time.sleep(1.0)  # the recorder's end grace: the last episode is written
    round_dir = root / "episodes" / f"round_{r:03d}"
    shutil.rmtree(round_dir, ignore_errors=True)
    recorded = _collect_round(incoming, round_dir)
    metas = [rec.meta for rec in EpisodeStore(round_dir).list()]
    labelled = [m.success for m in metas if m.success is not None]
    t_record = time.perf_counter() - t0

    entry = registry.get(active)
    overrides = [f"init={entry.path / 'checkpoint'}", f"out={root / 'rounds' / f'round_{r:03d}'}",
                 f"offline.episodes={','.join(str(root / 'episodes' / f'round_{i:03d}') for i in range(r + 1))}",
                 f"offline.registry={registry.root}", "exploration.std_mode=fixed",
                 f"exploration.std={cfg.exploration_std}", f"rollout.temperature={cfg.temperature}",
                 "eval_episodes_per_task=0", f"seed={cfg.seed + r}"]
    if cfg.tasks:
        overrides.append(f"rollout.tasks=[{', '.join(cfg.tasks)}]")
    first_world_model = root / "rounds" / "round_000" / "world_model" / "final"
    if r > 0 and (first_world_model / "config.json").is_file():
        # fitted once, on the demonstrations and the first round, as online RL fits it on the first rollouts: a
        # refit every round would cost minutes and move the reward's scale between rounds (an explicit
        # train.reward.encoder_path still wins: the loop's own overrides come first)
        overrides.append(f"reward.encoder_path={first_world_model}")
    train_yaml = cfg.train_config or str(Path(__file__).resolve().parent.parent / "configs" / "srpo.yaml")
    rl = load_config(RLConfig, train_yaml if Path(train_yaml).is_file() else None, overrides + cfg.train_overrides)
    row = {"round": r + 1, "acted": active, "episodes": recorded, "timeouts": timeouts, "lost": lost,
           "labelled": len(labelled), "successes": int(sum(labelled)), "time/record_s": t_record}
    t1 = time.perf_counter()
    try:
        run = train_offline(rl, progress=progress)
    except ValueError as exc:  # RunConfigError: nothing usable was recorded; the active version stays
        row.update(candidate=None, push={"accepted": False, "reason": f"no update: {exc}"}, active_after=active)
        return row
    summary = json.loads((run / "summary.json").read_text())
    row.update({"time/train_s": time.perf_counter() - t1, "mean_progress_reward": summary["mean_progress_reward"],
                "episodes_used": summary["episodes_used"], "excluded": summary["episodes_excluded"],
                "is_weight_mean": summary["update"].get("offline/is_weight_mean")})
    candidate = summary["version"]
    if candidate.split("@")[-1] == active.split("@")[-1]:  # same weights: the update had nothing to learn from
        row.update(candidate=None, active_after=active,
                   push={"accepted": False, "reason": "no change: the update left the weights as they were (no group "
                                                    "with a reward spread, e.g. no success to refer to)"})
        return row
    export_dir = export_onnx(run / "final", run / "export", data=str(round_dir))
    engine_dir, row["tensorrt"] = _engine(cfg, export_dir, console)
    try:
        registry.publish(export_dir, checkpoint_dir=run / "final", parent=active, engine_dir=engine_dir,
                         metrics={"recorded_success": summary["recorded_success"],
                                  "mean_progress_reward": summary["mean_progress_reward"], "round": r + 1})
    except FileExistsError:
        pass  # a resumed round that published before it was interrupted
    row["candidate"] = candidate
    evals = state["evals"]
    before = _evaluate(entry.path / "checkpoint", cfg, evals, active)
    after = _evaluate(run / "final", cfg, evals, candidate)
    if before is not None:
        row["eval_states"] = cfg.eval_states
        row["eval_active"], row["eval_candidate"] = before["success"], after["success"]
    if cfg.gate_margin is not None and after["success"] < before["success"] - cfg.gate_margin:
        row["push"] = {"accepted": False, "reason": f"gated: {cfg.eval_states} {after['success']:.1%} < active "
                                                    f"{before['success']:.1%} - margin {cfg.gate_margin:.1%}"}
        row["active_after"] = active
        return row
    result = link.push(candidate)
    row["push"] = {k: result.get(k) for k in ("accepted", "reason")}
    row["active_after"] = candidate if result.get("accepted") else active
    if result.get("accepted"):
        link.wait_ready(candidate, 60.0, cfg.robot)
    return row


def _engine(cfg: LoopConfig, export_dir: Path, console) -> tuple[Path | None, str]:
    """A TensorRT engine of the export (checked against ONNX Runtime), or None and why not."""
    if cfg.tensorrt == "off":
        return None, "off"
    from srpo.runtime.tensorrt_backend import tensorrt_status

    ok, why = tensorrt_status()
    if not ok:
        if cfg.tensorrt == "on":
            raise RuntimeError(f"tensorrt=on but TensorRT cannot build here: {why}")
        console.print(f"no TensorRT engine: {why}")
        return None, f"not built: {why}"
    from srpo_export.to_trt import build_engine

    out = export_dir.with_name("engine")
    build_engine(export_dir / "model.onnx", out, check=True, log=console.print)
    return out, "built and checked"


def _save(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, path)


def _print_rounds(state: dict, console) -> None:
    from rich.table import Table

    from srpo_trainer.evaluate import wilson_interval

    table = Table(title="srpo loop: one row per round")
    states = next((r["eval_states"] for r in state["rounds"] if "eval_states" in r), "heldout")
    for col in ("round", "acted with", "recorded success (95% CI)", "mean progress reward",
                f"{states}: active -> new", "new version", "push"):
        table.add_column(col, overflow="fold")
    for row in state["rounds"]:
        n, s = row["labelled"], row["successes"]
        lo, hi = wilson_interval(s, n) if n else (0.0, 0.0)
        reward = row.get("mean_progress_reward")
        held = f"{row['eval_active']:.0%} -> {row['eval_candidate']:.0%}" if "eval_active" in row else "-"
        push = row["push"]
        table.add_row(str(row["round"]), row["acted"], f"{s}/{n} ({lo:.0%}-{hi:.0%})" if n else "-",
                      "-" if reward is None else f"{reward:.2f}", held, row.get("candidate") or "-",
                      ("accepted" if push.get("accepted") else f"rejected: {push.get('reason')}"))
    console.print(table)


def _plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from srpo_trainer.evaluate import wilson_interval

    rows = state["rounds"]
    if not rows:
        return
    x = np.array([r["round"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    y = np.array([r["successes"] / max(r["labelled"], 1) for r in rows])
    ci = np.array([wilson_interval(r["successes"], r["labelled"]) if r["labelled"] else (0, 0) for r in rows])
    ax.errorbar(x, 100 * y, yerr=[100 * (y - ci[:, 0]), 100 * (ci[:, 1] - y)], fmt="o-", capsize=3,
                label="recorded episodes (train states, sampled)")
    held = [(r["round"], r["eval_active"], r["eval_states"]) for r in rows if "eval_active" in r]
    if held:
        ax.plot([h[0] for h in held], [100 * h[1] for h in held], "s--", label=f"{held[0][2]}, version that acted")
    ax.set_xlabel("round")
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 100)
    ax.set_xticks(x)
    ax.set_title("srpo loop: success per round (95% CI)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loop_config(argv_overrides: list[str], config: str | None = None) -> LoopConfig:
    """``key=value`` overrides into a LoopConfig; ``train.key=value`` ones are kept for the offline update."""
    train = [o[len("train."):] for o in argv_overrides if o.startswith("train.")]
    own = [o for o in argv_overrides if not o.startswith("train.")]
    cfg = load_config(LoopConfig, config, own)
    cfg.train_overrides = list(cfg.train_overrides) + train
    return cfg


__all__ = ["LoopConfig", "bringup_params", "episode_schedule", "loop_config", "run_loop"]
