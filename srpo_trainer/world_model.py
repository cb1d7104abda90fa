"""The built-in latent world model: an action-conditioned JEPA trained on the project's own episodes, without labels.

    z_t     = f_theta(o_t)                                  online encoder (CNN on one camera)
    zbar_t  = f_xi(o_t),    xi <- tau * xi + (1 - tau) * theta     EMA target encoder (no gradient)
    zhat    = z_t + g_phi(z_t, a_t, ..., a_{t+h-1})          predictor of the latent h steps ahead
    loss    = || zhat - sg(zbar_{t+h}) ||^2                  prediction in latent space (JEPA, no pixels)
            + var_weight * mean_d max(0, 1 - std(z_d))       VICReg variance: keeps latents from collapsing
            + cov_weight * sum_{i != j} cov(z)_ij^2 / d      VICReg covariance: spreads information over dimensions

Predicting the *consequences of actions* in latent space makes the encoder keep what actions change (where the
gripper and the objects are) and drop what they do not (textures, lighting); that is what "progress" is made of.
The model never reads success flags or ground-truth progress: ``WorldModelDataset`` takes frames and actions only.

A trained model embeds a trajectory (``BuiltinEncoder``) by encoding frames spread over the episode with the EMA
encoder and pooling them over time.

    srpo worldmodel train --data outputs/demos --out runs/wm steps=3000
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo.config import require_positive
from srpo_trainer.encoders.base import EncoderError, TrajectoryEncoder, sample_frames, to_tensor
from srpo_trainer.run_checkpoints import latest_checkpoint, open_run, restore_trainer_state, save_run_checkpoint

FORMAT = "srpo-world-model/1"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
POOLINGS = ("mean", "last", "mean_last", "segments")


@dataclass
class WorldModelConfig:
    """Architecture of the world model and how it embeds a trajectory."""

    camera: str = "agentview"
    image_size: int = 64
    latent_dim: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 64)
    """Stride-2 conv stages of the encoder (image_size / 16 pixels per side remain before the linear head)."""
    action_dim: int = 7
    horizon: int = 4
    """Steps ahead the predictor predicts, from the latent now and the h actions in between."""
    predictor_hidden: int = 256
    frames: int = 16
    """Frames spread over an episode when embedding a trajectory."""
    pooling: str = "mean"
    """How frame latents become one embedding: mean, last, mean_last (concatenated) or segments (4 time means).
    Mean pooling tracked progress best on held-out attempts (benchmarks/reward_fidelity.py, README)."""

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        if self.image_size % (2 ** len(self.channels)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.channels)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if min(self.latent_dim, self.horizon, self.frames, self.action_dim) < 1:
            raise ValueError("latent_dim, horizon, frames and action_dim must be >= 1")

    @property
    def embedding_dim(self) -> int:
        return {"mean": 1, "last": 1, "mean_last": 2, "segments": 4}[self.pooling] * self.latent_dim


@dataclass
class WorldModelTrainConfig:
    """``srpo worldmodel train``: data, optimisation and logging."""

    data: str = "outputs/demos"
    """Episode store(s) to learn from, comma-separated; success labels are never read."""
    out: str = "runs/world_model"
    split: str | None = "train"
    """Only episodes from this split of initial states (None: all)."""
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    ema: float = 0.99
    var_weight: float = 1.0
    cov_weight: float = 0.04
    augment_shift: int = 2
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    threads: int = 2
    model: WorldModelConfig = field(default_factory=WorldModelConfig)

    def __post_init__(self) -> None:
        require_positive(self, "steps", "batch_size", "checkpoint_every", "log_every", "threads")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


class FrameEncoder(nn.Module):
    """(N, 3, S, S) normalised pixels -> (N, latent_dim)."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        layers, c_in = [], 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        side = cfg.image_size // 2 ** len(cfg.channels)
        self.head = nn.Linear(c_in * side * side, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


class LatentWorldModel(nn.Module):
    """Online encoder, EMA target encoder and the action-conditioned latent predictor."""

    def __init__(self, cfg: WorldModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(cfg)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        d, h = cfg.latent_dim, cfg.predictor_hidden
        self.predictor = nn.Sequential(nn.Linear(d + cfg.horizon * cfg.action_dim, h), nn.GELU(), nn.Linear(h, h),
                                       nn.GELU(), nn.Linear(h, d))

    def predict(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return z + self.predictor(torch.cat([z, actions.flatten(1)], dim=1))

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.mul_(tau).add_(o.detach(), alpha=1.0 - tau)


def vicreg_terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(variance hinge, covariance penalty) of a batch of latents (N, d), as in VICReg (Bardes et al. 2022)."""
    z = z - z.mean(dim=0)
    std = torch.sqrt(z.var(dim=0) + 1e-4)
    var_loss = torch.relu(1.0 - std).mean()
    cov = (z.T @ z) / max(len(z) - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return var_loss, off.pow(2).sum() / z.shape[1]


def world_model_loss(model: LatentWorldModel, obs_now: torch.Tensor, actions: torch.Tensor, obs_next: torch.Tensor,
                     var_weight: float, cov_weight: float, diagnostics: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """JEPA prediction loss plus VICReg regularisers (see the module docstring).

    ``diagnostics`` adds ``loss/pred_vs_still`` (one more target-encoder pass): the prediction error relative to
    predicting "nothing changes"; below 1 means the predictor uses the actions."""
    z = model.encoder(obs_now)
    with torch.no_grad():
        target = model.target_encoder(obs_next)
    pred = model.predict(z, actions)
    pred_loss = (pred - target).pow(2).mean()
    var_loss, cov_loss = vicreg_terms(z)
    loss = pred_loss + var_weight * var_loss + cov_weight * cov_loss
    info = {"loss/pred": pred_loss.item(), "loss/var": var_loss.item(), "loss/cov": cov_loss.item()}
    if diagnostics:
        with torch.no_grad():
            still = (model.target_encoder(obs_now) - target).pow(2).mean()
        info["loss/pred_vs_still"] = (pred_loss / still.clamp_min(1e-8)).item()
    return loss, info


class WorldModelDataset:
    """(frame t, actions t..t+h-1, frame t+h) triples from episodes; reads frames and actions only."""

    def __init__(self, episodes: list[Episode], cfg: WorldModelConfig) -> None:
        self.cfg = cfg
        frames, actions, index = [], [], []
        offset = action_offset = 0
        for ep in episodes:
            if cfg.camera not in ep.images:
                raise ValueError(f"episode {ep.meta.episode_id} has no camera {cfg.camera!r}")
            if ep.actions.shape[1] != cfg.action_dim:
                raise ValueError(f"episode {ep.meta.episode_id} has {ep.actions.shape[1]}-D actions, "
                                 f"the world model expects {cfg.action_dim}")
            T = ep.length
            if T < cfg.horizon:
                continue
            # triples need frames at t and t+h: with sparse frames only the framed steps h apart qualify
            steps = ep.image_steps
            starts = np.flatnonzero(np.isin(steps + cfg.horizon, steps))
            if len(starts) == 0:
                continue
            frames.append(ep.images[cfg.camera])
            index.append(np.stack([starts + offset, np.searchsorted(steps, steps[starts] + cfg.horizon) + offset,
                                   steps[starts] + action_offset], axis=1))
            actions.append(np.concatenate([ep.actions, np.zeros((1, cfg.action_dim), np.float32)]))
            offset += len(steps)
            action_offset += T + 1
        if not index:
            raise ValueError(f"no episode has two frames {cfg.horizon} steps (the horizon) apart")
        self.frames = np.concatenate(frames)
        self.actions = np.concatenate(actions).astype(np.float32)
        self.triples = np.concatenate(index)  # (N, 3): frame now, frame h steps later, first action
        self.episodes = len(index)

    def __len__(self) -> int:
        return len(self.triples)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        now, later, a = self.triples[idx].T
        acts = self.actions[a[:, None] + np.arange(self.cfg.horizon)[None, :]]
        return (to_tensor(self.frames[now], self.cfg.image_size), torch.from_numpy(acts),
                to_tensor(self.frames[later], self.cfg.image_size))


# ------------------------------------------------------------------------------------------------ save / load
def save_world_model(model: LatentWorldModel, directory: str | os.PathLike, extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = directory / f".{WEIGHTS_FILE}.tmp", directory / f".{CONFIG_FILE}.tmp"
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp_w),
              metadata={"format": FORMAT})
    tmp_c.write_text(json.dumps({"format": FORMAT, "config": asdict(model.cfg), **(extra or {})}, indent=2))
    os.replace(tmp_w, directory / WEIGHTS_FILE)
    os.replace(tmp_c, directory / CONFIG_FILE)
    return directory


def load_world_model(directory: str | os.PathLike) -> LatentWorldModel:
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise EncoderError(f"{directory}: not a world model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
        if meta.get("format") != FORMAT:
            raise EncoderError(f"{directory}: format {meta.get('format')!r}, expected {FORMAT!r}")
        model = LatentWorldModel(WorldModelConfig(**meta["config"]))
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except EncoderError:
        raise
    except Exception as exc:  # noqa: BLE001 - JSON, safetensors and shape errors alike mean a damaged checkpoint
        raise EncoderError(f"{directory}: cannot load world model: {type(exc).__name__}: {exc}") from exc
    return model.eval()


class BuiltinEncoder(TrajectoryEncoder):
    """Trajectory embedding from the world model's EMA encoder, pooled over ``cfg.frames`` frames."""

    name = "builtin"

    def __init__(self, model: LatentWorldModel) -> None:
        self.model = model.eval()
        self.cfg = model.cfg

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "BuiltinEncoder":
        return cls(load_world_model(directory))

    @classmethod
    def random(cls, cfg: WorldModelConfig | None = None, seed: int = 0) -> "BuiltinEncoder":
        """An untrained world model: the floor any learnt encoder must beat."""
        torch.manual_seed(seed)
        enc = cls(LatentWorldModel(cfg or WorldModelConfig()))
        enc.name = "random"
        return enc

    @property
    def dim(self) -> int:
        return self.cfg.embedding_dim

    def frame_latents(self, frames: np.ndarray) -> np.ndarray:
        """EMA-encoder latents of individual frames (T, H, W, 3) -> (T, latent_dim)."""
        with torch.no_grad():
            return self.model.target_encoder(to_tensor(frames, self.cfg.image_size)).numpy()

    def _encode_batch(self, videos: list[np.ndarray]) -> np.ndarray:
        clips = np.stack([sample_frames(v, self.cfg.frames) for v in videos])
        B, T = clips.shape[:2]
        z = self.model.target_encoder(to_tensor(clips, self.cfg.image_size).flatten(0, 1)).reshape(B, T, -1)
        if self.cfg.pooling == "mean":
            return z.mean(1).numpy()
        if self.cfg.pooling == "last":
            return z[:, -1].numpy()
        if self.cfg.pooling == "mean_last":
            return torch.cat([z.mean(1), z[:, -1]], dim=1).numpy()
        return torch.cat([s.mean(1) for s in torch.tensor_split(z, 4, dim=1)], dim=1).numpy()


# --------------------------------------------------------------------------------------------------- training
def _select(cfg: WorldModelTrainConfig) -> list[Episode]:
    """The training episodes in an order fixed by their content: file names are random episode ids, and the sample
    indices depend on the order, so two runs on the same episodes fit the same model."""
    import hashlib

    episodes = []
    for root in [p.strip() for p in cfg.data.split(",") if p.strip()]:
        store = EpisodeStore(root)
        episodes += [store.load(r) for r in store.list(split=cfg.split, strict=True)]
    if not episodes:
        raise ValueError(f"no episodes in {cfg.data} (split={cfg.split})")
    return sorted(episodes, key=lambda e: (e.meta.task, str(e.meta.init_state_id),
                                           hashlib.sha256(np.ascontiguousarray(e.actions).tobytes()).hexdigest()))


def train_world_model(cfg: WorldModelTrainConfig, progress: bool = True) -> Path:
    """Train (or resume) the world model; returns the folder of the final model."""
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from srpo_trainer.datasets import random_shift

    torch.set_num_threads(cfg.threads)
    run = open_run(cfg.out, cfg)
    dataset = WorldModelDataset(_select(cfg), cfg.model)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = LatentWorldModel(cfg.model)
    params = list(model.encoder.parameters()) + list(model.predictor.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))))
    start = 0
    resume = latest_checkpoint(run)
    if resume is not None:
        model = load_world_model(resume).train()
        params = list(model.encoder.parameters()) + list(model.predictor.parameters())
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_lambdas[0])
        start = restore_trainer_state(resume, optimizer, schedule, rng)
        print(f"resuming {run} from {resume.name} (step {start}/{cfg.steps})")
    writer = SummaryWriter(str(run / "tb"))
    model.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="world model", unit="step",
               disable=not progress)
    t0 = time.perf_counter()
    for step in bar:
        now, acts, nxt = dataset.batch(rng.integers(len(dataset), size=cfg.batch_size))
        if cfg.augment_shift:  # the same shift for both frames of a pair: motion stays what the actions did
            both = random_shift(torch.stack([now, nxt], dim=1), cfg.augment_shift)
            now, nxt = both[:, 0], both[:, 1]
        done = step + 1
        log_now = done % cfg.log_every == 0 or done == cfg.steps
        loss, info = world_model_loss(model, now, acts, nxt, cfg.var_weight, cfg.cov_weight, diagnostics=log_now)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        model.update_target(cfg.ema)
        if log_now:
            info.update({"loss/total": loss.item(), "optim/lr": schedule.get_last_lr()[0],
                         "perf/steps_per_s": (done - start) / (time.perf_counter() - t0)})
            for k, v in info.items():
                writer.add_scalar(k, v, done)
            bar.set_postfix(pred=f"{info['loss/pred']:.3f}", vs_still=f"{info['loss/pred_vs_still']:.2f}")
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save_run_checkpoint(run, done, lambda d: save_world_model(model, d, {"step": done}), optimizer,
                                schedule, rng)
    writer.close()
    return save_world_model(model, run / "final", {"steps": cfg.steps, "episodes": dataset.episodes,
                                                    "samples": len(dataset)})


__all__ = ["BuiltinEncoder", "LatentWorldModel", "WorldModelConfig", "WorldModelDataset", "WorldModelTrainConfig",
           "load_world_model", "save_world_model", "train_world_model", "vicreg_terms", "world_model_loss"]
