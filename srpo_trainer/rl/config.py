"""Typed configuration of ``srpo train`` (YAML under ``configs/`` plus ``key.sub=value`` overrides).

Every value is checked when the config is built, so a bad value stops the run before any rollout starts.
Defaults follow the SRPO reference where it applies to a small policy on CPU; departures are named in the field's
docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from srpo.sim.suites import check_suite, resolve_task, splits
from srpo.config import require_positive
from srpo_trainer.distributed.config import DistributedConfig
from srpo_trainer.encoders import ENCODERS
from srpo_trainer.progress_reward import ProgressRewardConfig
from srpo_trainer.rl.exploration import RATIOS, ExplorationConfig
from srpo_trainer.rl.rewards import REWARD_MODES
from srpo_trainer.rollouts import RECORD_FRAMES

FILTERS = ("reward_spread", "success_rate", "none")
AGGREGATIONS = ("trajectory_mean", "token_mean")
ADVANTAGES = ("grpo", "rloo", "progress_gae")
LOSSES = ("ppo_clip", "rwr")


def _prompt_reference() -> ProgressRewardConfig:
    return ProgressRewardConfig(reference="prompt_or_task")


@dataclass
class RolloutConfig:
    """How each RL step samples its batch."""

    suite: str = "tabletop"
    """Simulation suite: tabletop, or a LIBERO suite such as libero_spatial (``srpo[libero]``)."""
    tasks: list[str] | None = None
    """Tasks to train on (default: every task of the suite; LIBERO tasks also by index)."""
    max_steps: int | None = None
    """Cut episodes at this many steps (default: each task's limit): small LIBERO runs on a CPU."""
    fast_render: bool = False
    """LIBERO: shadows, multisampling and reflections off (about 3x faster on a CPU; other pixels)."""
    train_states: int = 50
    """Prompts use initial states 0..N-1 of the TRAIN split; evaluation uses the held-out split."""
    prompts_per_step: int = 10
    """Prompts (task + initial state) per RL step; tasks are cycled so each gets the same share."""
    group_size: int = 8
    """Rollouts per prompt (n in the paper)."""
    temperature: float = 1.0
    """Sampling temperature: scales the policy's std (the reference uses 1.6 for token logits)."""
    execute_steps: int = 8
    """Actions executed open loop from each sampled chunk (the chunk's log-prob is what the update scores)."""
    workers: int = 4
    """Simulator processes. More than the cores pays: each steps a whole chunk per call and sits idle while the
    policy decides, and larger decision batches amortise inference (``benchmarks/rollout_throughput.py``)."""
    inference_threads: int = 1
    """torch threads for inference while rolling out (the update uses ``threads``): the simulator processes need
    the cores (``benchmarks/rollout_throughput.py``)."""
    record_frames: str = "decisions"
    """Camera frames a rollout renders and records: ``decisions`` (where the policy chose a chunk, and the last
    step: everything the update and the progress reward read; 2-3x faster rollouts) or ``every_step``."""

    def env_options(self) -> dict:
        """Keyword arguments of the suite's env (``make_vector_env(env_options=...)``)."""
        options: dict = {"max_steps": self.max_steps} if self.max_steps else {}
        if self.fast_render:
            options["fast_render"] = True
        return options

    def __post_init__(self) -> None:
        if self.record_frames not in RECORD_FRAMES:
            raise ValueError(f"rollout.record_frames must be one of {RECORD_FRAMES}, got {self.record_frames!r}")
        check_suite(self.suite)
        if self.tasks is not None and not self.tasks:
            raise ValueError("rollout.tasks is empty")
        if self.tasks:
            self.tasks = [resolve_task(self.suite, str(t)) for t in self.tasks]
        if self.fast_render and self.suite == "tabletop":
            raise ValueError("rollout.fast_render is a LIBERO option")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"rollout.max_steps must be >= 1, got {self.max_steps}")
        if self.group_size < 2:
            raise ValueError(f"rollout.group_size must be >= 2 (group-normalised advantages), got {self.group_size}")
        if not 1 <= self.train_states <= splits(self.suite)["train"]:
            raise ValueError(f"rollout.train_states must be in 1..{splits(self.suite)['train']} for {self.suite}, "
                             f"got {self.train_states}")
        if self.prompts_per_step < 1 or self.workers < 1 or self.execute_steps < 1 or self.inference_threads < 1:
            raise ValueError("rollout.prompts_per_step, workers, execute_steps and inference_threads must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"rollout.temperature must be > 0, got {self.temperature}")


@dataclass
class WorldModelFitConfig:
    """Fit the built-in world model before the first update when ``reward.encoder_path`` is not given."""

    data: str | None = None
    """Episode store(s), comma-separated (e.g. the SFT demos); the first step's rollouts are always added."""
    steps: int = 1500
    batch_size: int = 64
    rollouts_only: bool = False
    """Allow fitting on the first step's rollouts alone when no episodes are given (e.g. LIBERO without its HDF5
    demonstrations): a weaker model, seen only what the initial policy did; an explicit choice, never a fallback."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("reward.world_model.steps and batch_size must be >= 1")


@dataclass
class RewardConfig:
    mode: str = "srpo"
    """srpo (progress reward), binary (GRPO baseline: success only) or oracle (true progress: an upper bound)."""
    coef: float = 5.0
    """Reward coefficient (reference: 5.0), applied to the trajectory's reward on its last step."""
    encoder: str = "builtin"
    """Trajectory encoder for ``srpo``: builtin, pixels, random, vjepa2 or image."""
    encoder_path: str | None = None
    """Checkpoint of the encoder (a world model for ``builtin``); None with builtin: fit one first (world_model)."""
    camera: str = "agentview"
    """Camera whose frames the encoder sees (the reference uses the third-person view)."""
    progress: ProgressRewardConfig = field(default_factory=_prompt_reference)
    """Progress-reward constants. Departure: reference ``prompt_or_task`` (the paper: ``task``) because the
    per-task reference ranks failures by layout, not progress (see README, reward fidelity)."""
    world_model: WorldModelFitConfig = field(default_factory=WorldModelFitConfig)

    def __post_init__(self) -> None:
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward.mode must be one of {REWARD_MODES}, got {self.mode!r}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"reward.encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.coef <= 0:
            raise ValueError(f"reward.coef must be > 0, got {self.coef}")


@dataclass
class FilterConfig:
    """Dynamic sampling: keep prompts whose group success rate lies in [low, high]."""

    kind: str = "reward_spread"
    """reward_spread (keep groups whose rewards differ by at least ``min_spread`` x coef: under a dense reward
    all-fail groups with a success reference keep their signal; under binary it is the success-rate filter with
    low = 1/n, high = 1 - 1/n), success_rate (the reference: drops every all-fail group) or none."""
    min_spread: float = 0.01
    """reward_spread: the smallest max - min of a group's rewards, as a fraction of ``reward.coef``."""
    low: float = 0.1
    high: float = 0.9
    min_kept_prompts: int = 2
    """Refill (roll out more prompts) while fewer prompts than this survive the filter ..."""
    max_refills: int = 2
    """... at most this many times per step."""

    def __post_init__(self) -> None:
        if self.kind not in FILTERS:
            raise ValueError(f"filter.kind must be one of {FILTERS}, got {self.kind!r}")
        if not 0 <= self.low <= self.high <= 1:
            raise ValueError(f"need 0 <= filter.low <= filter.high <= 1, got {self.low}, {self.high}")
        if self.min_kept_prompts < 0 or self.max_refills < 0:
            raise ValueError("filter.min_kept_prompts and max_refills must be >= 0")
        if self.min_spread < 0:
            raise ValueError(f"filter.min_spread must be >= 0, got {self.min_spread}")


@dataclass
class RegressionConfig:
    """``update.loss: rwr``: reward-weighted regression on the recent rollouts (and the demonstrations)."""

    beta: float = 0.1
    """Temperature of the weights exp((R/c - 1) / beta) (``objectives.reward_weights``): a success weighs 1, a
    failure whose dense reward is R weighs exp(-(1 - R/c) / beta). With ``weighting: advantage``, of exp(A / beta)."""
    min_weight: float = 1e-3
    """Trajectories weighing less are left out (they would only cost memory)."""
    weighting: str = "reward"
    """reward: exp((R/c - 1) / beta), absolute (``objectives.reward_weights``); advantage:
    min(exp(A / beta), max_weight) with A the group-normalised advantage (``objectives.advantage_weights``, AWR): the
    weight goes to successes among failures of the same prompt rather than to prompts already solved."""
    max_weight: float = 20.0
    """advantage weighting: the largest weight one trajectory gets (AWR's clip)."""
    steps: int = 200
    """Gradient steps of the SFT loss per RL step."""
    batch_size: int = 64
    replay_steps: int = 0
    """Regress on the rollouts of the last N RL steps (0: every step so far)."""
    demos: str | None = None
    """Episode store of demonstrations mixed in with weight 1 (e.g. the SFT data): keeps the policy anchored."""
    demos_per_task: int | None = None
    augment_shift: int = 4
    """Random-shift augmentation in pixels, as in SFT."""
    use_rollouts: bool = True
    """False: regress on the demonstrations only (rollouts are still collected and scored). The control that
    separates what the rollouts teach from what more supervised steps on the demonstrations alone would do."""

    def __post_init__(self) -> None:
        if self.weighting not in ("reward", "advantage"):
            raise ValueError(f"update.regression.weighting must be reward or advantage, got {self.weighting!r}")
        if self.max_weight < 1:
            raise ValueError("update.regression.max_weight must be >= 1")
        if self.beta <= 0 or not 0 <= self.min_weight < 1:
            raise ValueError("update.regression.beta must be > 0 and min_weight in [0, 1)")
        if self.steps < 1 or self.batch_size < 1 or self.replay_steps < 0 or self.augment_shift < 0:
            raise ValueError("update.regression.steps and batch_size must be >= 1, replay_steps and augment_shift "
                             ">= 0")


@dataclass
class UpdateConfig:
    """The policy update: PPO-clip guarded by a measured KL per chunk, or reward-weighted regression (see
    ``rl/objectives.py``)."""

    loss: str = "ppo_clip"
    """ppo_clip (policy gradient through importance ratios) or rwr (reward-weighted regression: the SFT loss on the
    recent rollouts weighted by their rewards, plus the demonstrations; no ratio; settings in ``regression``)."""
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    lr: float = 1e-5
    weight_decay: float = 0.0
    epochs: int = 8
    """Passes over the step's decisions; the KL guard usually ends the update before the last."""
    minibatch_size: int = 64
    """Decisions (sampled chunks) per gradient step."""
    ratio: str = "step"
    """Granularity of the importance ratio: ``element`` (one per chunk element, token-level as the reference's
    action tokens), ``step`` (one per executed action, summed over its dimensions, as RIPT-VLA-OFT) or ``chunk``
    (one per decision, as DPPO and RLinf)."""
    target_kl: float | None = 0.5
    """KL guard: stop the update once the exact KL(old || new) per decision (over its executed steps, nats),
    averaged over a mini-batch, exceeds this (checked before each gradient step). None: no guard."""
    adaptive_lr: bool = True
    """Adapt the step size to the KL guard after every RL step: x1.5 when the update ended below target_kl / 2
    without being stopped, /1.5 when it overshot target_kl (an Adam step at a fixed lr can move this policy by
    0.1-10 nats per decision depending on the batch; the guard alone cannot undo an overshoot)."""
    lr_range: list[float] = field(default_factory=lambda: [1e-6, 1e-3])
    """Bounds of the adapted learning rate."""
    advantage: str = "grpo"
    """grpo ((R - mean) / max(std, floor) per group), rloo (R minus the mean of the group's others, / coef), or
    progress_gae (one advantage per decision: GAE over a value baseline fitted on the per-step progress, see
    ``objectives.progress_gae_advantages``; needs a per-step progress signal, today the oracle's)."""
    gae_lambda: float = 0.9
    """progress_gae: lambda, per decision (chunk)."""
    adv_std_floor: float = 0.1
    """grpo: the std never counts as smaller than this fraction of ``reward.coef`` (0 and ``adv_eps``: the
    reference), so nearly equal rewards are not inflated into unit advantages."""
    clip_low: float = 0.2
    clip_high: float = 0.28
    log_ratio_clamp: float = 20.0
    kl_coef: float = 0.0
    """Weight of the k3 KL penalty to the initial policy (0: off, as in the reference scripts)."""
    grad_clip: float = 1.0
    adv_eps: float = 1e-6
    loss_aggregation: str = "trajectory_mean"
    """How per-ratio losses are averaged: ``trajectory_mean`` (every trajectory weighs the same, however long) or
    ``token_mean`` (every ratio weighs the same, the reference). Departure from the reference: failures run
    to the step limit while successes stop early, so under token_mean the long failures dominate the gradient and the
    update mostly pushes probability away from failed actions (the length bias described by Dr. GRPO)."""
    grad_snr_every: int = 1
    """Measure the cosine between the policy gradients of two disjoint halves of the step's batch every N steps
    (a signal-to-noise diagnostic; 0: never)."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.epochs < 1 or self.minibatch_size < 1:
            raise ValueError("update.lr must be > 0, epochs and minibatch_size >= 1")
        if self.clip_low <= 0 or self.clip_high <= 0 or self.clip_low >= 1:
            raise ValueError("need 0 < update.clip_low < 1 and update.clip_high > 0")
        if self.kl_coef < 0 or self.grad_clip <= 0:
            raise ValueError("update.kl_coef must be >= 0 and grad_clip > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"update.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.loss_aggregation not in AGGREGATIONS:
            raise ValueError(f"update.loss_aggregation must be one of {AGGREGATIONS}, got {self.loss_aggregation!r}")
        if self.ratio not in RATIOS:
            raise ValueError(f"update.ratio must be one of {RATIOS}, got {self.ratio!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"update.advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError(f"update.target_kl must be > 0 (or null for no guard), got {self.target_kl}")
        if len(self.lr_range) != 2 or not 0 < self.lr_range[0] <= self.lr <= self.lr_range[1]:
            raise ValueError(f"update.lr_range must be [low, high] with 0 < low <= lr <= high, got {self.lr_range}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"update.gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if self.adv_std_floor < 0 or self.grad_snr_every < 0:
            raise ValueError("update.adv_std_floor and grad_snr_every must be >= 0")


@dataclass
class OfflineConfig:
    """``srpo train --episodes DIR``: SRPO from recorded episodes instead of fresh rollouts (``rl/offline.py``)."""

    episodes: str | None = None
    """Episode store(s) the recorder wrote, comma-separated. Each is one collection round (a folder whose
    sub-folders are named ``round_*`` counts as one round per sub-folder); empty: online RL in the simulator."""
    is_cap: float = 2.0
    """c in w = min(pi_prox / pi_b, c): the truncation of the importance weights against the behaviour policy."""
    max_version_lag: int = 2
    """Episodes from the current version or up to this many ancestors (by the registry's parent links) are used;
    older ones are excluded with a reason."""
    registry: str | None = None
    """Policy registry whose manifests give the parent links (without it, only the current version is accepted,
    plus ``accept_versions``)."""
    accept_versions: list[str] = field(default_factory=list)
    """Further policy versions whose episodes are accepted explicitly."""

    def __post_init__(self) -> None:
        if not self.is_cap > 0:
            raise ValueError(f"offline.is_cap must be > 0, got {self.is_cap}")
        if self.max_version_lag < 0:
            raise ValueError(f"offline.max_version_lag must be >= 0, got {self.max_version_lag}")


@dataclass
class RLConfig:
    """``srpo train``: one SRPO / GRPO run."""

    init: str | None = None
    """SFT checkpoint to start from (``--init``)."""
    out: str = "runs/rl"
    """Run folder (``--out``)."""
    steps: int = 40
    """RL steps; each rolls out prompts_per_step x group_size trajectories (plus refills)."""
    eval_every: int = 5
    eval_episodes_per_task: int = 10
    """Held-out initial states 0..N-1 per task, deterministic actions; 0 disables evaluation."""
    eval_start: bool = True
    """Evaluate the initial policy before the first step (a benchmark that shares one start evaluation across runs
    turns it off)."""
    eval_sampled: bool = False
    """Also evaluate with sampled actions (the exploration distribution at the rollout temperature, fixed seed):
    the policy RL optimises, beside the deterministic one that deployment runs."""
    checkpoint_every: int = 5
    seed: int = 0
    threads: int = 2
    """torch intra-op threads (the machines have 2 cores)."""
    record_rollouts: bool = False
    """Write every rollout as an episode under ``out/rollouts`` (the first step's always are when a world model is
    fitted)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Where it runs: locally (default) or on a Ray cluster (``srpo_trainer/distributed``)."""

    def __post_init__(self) -> None:
        require_positive(self, "steps", "eval_every", "checkpoint_every", "threads")
        held = splits(self.rollout.suite)["heldout"]
        if not 0 <= self.eval_episodes_per_task <= held:
            raise ValueError(f"eval_episodes_per_task must be in 0..{held} for {self.rollout.suite}")
        if self.update.advantage == "progress_gae" and self.reward.mode != "oracle":
            raise ValueError("update.advantage=progress_gae needs a per-step progress signal: only reward.mode=oracle "
                             "has one today (the simulator's privileged progress)")
        if self.exploration.chunk_correlation > 0 and self.update.ratio != "chunk":
            raise ValueError("exploration.chunk_correlation > 0 has no per-step density: needs update.ratio=chunk")
        if self.offline.episodes and self.exploration.chunk_correlation > 0:
            raise ValueError("offline training scores the rows a robot executed, which need not be a prefix of the "
                             "chunk: needs exploration.chunk_correlation=0")
        if self.distributed.learners > 1 and self.update.loss != "ppo_clip":
            raise ValueError("distributed.learners > 1 distributes the ppo_clip update; update.loss=rwr runs on one "
                             "learner (distributed.learners=1)")
        if self.offline.episodes and self.distributed.backend != "local":
            raise ValueError("offline training (--episodes) reads recorded episodes and rolls nothing out: it runs on "
                             "distributed.backend=local")
        if self.offline.episodes and self.update.advantage == "progress_gae":
            raise ValueError("update.advantage=progress_gae reads the simulator's privileged progress: not offline")


__all__ = ["ADVANTAGES", "DistributedConfig", "ExplorationConfig", "FILTERS", "FilterConfig", "LOSSES", "OfflineConfig", "RLConfig", "RegressionConfig",
           "RewardConfig", "RolloutConfig", "UpdateConfig", "WorldModelFitConfig"]
