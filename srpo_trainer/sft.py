"""Supervised fine-tuning (behaviour cloning) of a VLA policy on episodes from a store.

The chunk mean is trained with an L1 loss (as OpenVLA-OFT); the Gaussian log-std is fitted by maximum likelihood
given the (detached) mean, so the stochastic head starts RL with a spread that matches its imitation error.

    srpo sft --data outputs/demos --out runs/sft5 demos_per_task=5 steps=3000

A run folder holds ``config.yaml``, TensorBoard logs in ``tb/``, checkpoints in ``checkpoints/step_*`` (policy +
optimizer state) and the final policy in ``final/``. Re-running the same command resumes from the last checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from srpo.episodes.store import EpisodeStore
from srpo.spec import RobotSpec
from srpo.config import require_positive
from srpo_trainer.datasets import ChunkDataset, random_shift, select_episodes
from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy
from srpo_trainer.processor import NormStats
from srpo_trainer.run_checkpoints import latest_checkpoint, open_run, restore_trainer_state, save_run_checkpoint



@dataclass
class SFTConfig:
    """Supervised fine-tuning run."""

    data: str = "outputs/demos"
    """Episode store to learn from (successful ``train``-split episodes)."""
    out: str = "runs/sft"
    """Run folder (checkpoints, logs, final policy)."""
    tasks: list[str] | None = None
    """Tasks to train on (default: every task in the store)."""
    demos_per_task: int | None = None
    """Demonstrations per task, the first N by initial-state id (default: all)."""
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    augment_shift: int = 4
    """Random-shift augmentation in pixels (DrQ); 0 disables it."""
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    """torch intra-op threads (the machines have 2 cores)."""
    policy: TinyVLAConfig = field(default_factory=TinyVLAConfig)

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "checkpoint_every", "log_every", "threads")
        if self.demos_per_task is not None and self.demos_per_task < 1:
            raise ValueError(f"demos_per_task must be >= 1, got {self.demos_per_task}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def sft_loss(policy: TinyVLAPolicy, inputs: tuple[torch.Tensor, ...], chunks: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 on the normalised chunk mean + Gaussian NLL of the log-std given the detached mean, both masked.

    ``inputs`` are the model inputs from ``policy.encode`` (images possibly augmented).

    loss = sum_{b,k,a} m_bk |mu - y| / (A sum m)  +  sum m_bk [ (y - sg(mu))^2 / 2 sigma^2 + log sigma ] / (A sum m)
    """
    mean, log_std = policy.model(*inputs)
    target = policy.processor.normalize_actions(chunks)
    w = mask[..., None].expand_as(target)
    denom = w.sum().clamp_min(1.0)
    l1 = ((mean - target).abs() * w).sum() / denom
    z = (target - mean.detach()) * torch.exp(-log_std)
    nll = ((0.5 * z.pow(2) + log_std + 0.5 * math.log(2 * math.pi)) * w).sum() / denom
    return l1 + nll, {"loss/l1": l1.item(), "loss/nll": nll.item(), "policy/log_std_mean": log_std.mean().item()}


def _lr_lambda(cfg: SFTConfig):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train_sft(cfg: SFTConfig, progress: bool = True) -> Path:
    """Run (or resume) SFT; returns the folder of the final policy."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    run = open_run(cfg.out, cfg)

    episodes = select_episodes(EpisodeStore(cfg.data), cfg.tasks, cfg.demos_per_task)
    spec = RobotSpec.from_dict(episodes[0].meta.spec)
    dataset = ChunkDataset(episodes, spec, cfg.policy.chunk_size)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    version = f"sft:{Path(cfg.out).name}"
    policy = TinyVLAPolicy(cfg.policy, spec, NormStats.from_episodes(episodes), version=version)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    start = 0
    resume = latest_checkpoint(run)
    if resume is not None:
        policy = TinyVLAPolicy.from_pretrained(resume, expected_spec=spec)
        optimizer = torch.optim.AdamW(policy.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
        start = restore_trainer_state(resume, optimizer, scheduler, rng)
        print(f"resuming {run} from {resume.name} (step {start}/{cfg.steps})")
    writer = SummaryWriter(str(run / "tb"))
    if start == 0:
        writer.add_text("data", f"{dataset.episodes} episodes, {len(dataset)} samples, tasks {sorted(set(dataset.tasks))}")
    policy.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="sft", disable=not progress, unit="step")
    t0 = time.perf_counter()
    for step in bar:
        batch = dataset.batch(rng.integers(len(dataset), size=cfg.batch_size))
        images, proprio, ids, text_mask = policy.encode(batch.obs)
        inputs = (random_shift(images, cfg.augment_shift), proprio, ids, text_mask)
        loss, info = sft_loss(policy, inputs, batch.chunks, batch.mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            info.update({"loss/total": loss.item(), "optim/grad_norm": grad_norm.item(),
                         "optim/lr": scheduler.get_last_lr()[0],
                         "perf/steps_per_s": (done - start) / (time.perf_counter() - t0)})
            for k, v in info.items():
                writer.add_scalar(k, v, done)
            bar.set_postfix(loss=f"{loss.item():.3f}", l1=f"{info['loss/l1']:.3f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_run_checkpoint(run, done, policy.save_pretrained, optimizer, scheduler, rng)
    writer.close()
    final = policy.save_pretrained(run / "final")
    return final
