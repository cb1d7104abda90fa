"""TinyVLA: the built-in vision-language-action policy, sized for CPUs.

The instruction goes through byte embeddings and a small text transformer, pooled into one vector. Each RGB camera
goes through a shared CNN with coordinate channels whose stages are FiLM-modulated by that vector (so the instruction
selects which object the features track); it yields one token per 16x16-pixel patch plus one token of spatial-softmax
keypoint coordinates. A transformer trunk mixes the instruction, image and proprioception tokens with K learned
action queries, whose outputs are the mean of a Gaussian over the normalised action chunk (K x 7). The log-std is a
learned state-independent parameter per chunk element, so ``log_prob`` is exact and cheap.

>>> cfg = TinyVLAConfig()                                    # doctest: +SKIP
>>> policy = TinyVLAPolicy(cfg, TABLETOP_SPEC, stats)       # doctest: +SKIP
>>> out = policy.sample(obs, temperature=1.0)               # chunks (B, 8, 7) env units, log_probs (B,)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from srpo.spec import RobotSpec
from srpo_trainer.policies.base import Generators, Observation, Policy, PolicyOutput, stamp_version, standard_normal
from srpo_trainer.policies.text import BuiltinTextEncoder, ByteTokenizer, HFTextEncoder, HFTokenizer
from srpo_trainer.processor import NormStats, Processor

CHECKPOINT_FORMAT = "srpo-tiny-vla/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TEXT_DIR = "text_encoder"


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or does not match the requested spec."""


@dataclass
class TinyVLAConfig:
    """Sizes of the built-in policy (defaults: ~1.3 M parameters, a few ms per batch-1 inference on 2 cores)."""

    chunk_size: int = 8
    """K, the number of future actions predicted at once (OpenVLA-OFT uses 8)."""
    d_model: int = 128
    """Width of every token."""
    n_heads: int = 4
    n_layers: int = 4
    text_layers: int = 1
    """Layers of the built-in text encoder (byte tokens -> one pooled instruction token)."""
    text_encoder: str = "builtin"
    """``builtin`` (byte-level, trained from scratch) or a local Hugging Face model directory (e.g. a BERT)."""
    train_text_encoder: bool = False
    """Fine-tune a Hugging Face text encoder (it is frozen by default; the projection always trains)."""
    ff_mult: int = 2
    """Feed-forward width as a multiple of d_model."""
    cnn_channels: tuple[int, ...] = (32, 64, 96)
    """Channels of the stride-2 conv stages before the final stride-2 projection to d_model (16x16 patches)."""
    keypoints: int = 32
    """Spatial-softmax keypoints per camera (their coordinates form one extra image token)."""
    max_text_len: int = 96
    dropout: float = 0.0
    init_log_std: float = -1.0
    min_log_std: float = -5.0
    max_log_std: float = 1.0

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if len(self.cnn_channels) != 3:
            raise ValueError(f"cnn_channels needs 3 stages (16x downsampling with the projection), got {self.cnn_channels}")
        if not self.min_log_std < self.init_log_std < self.max_log_std:
            raise ValueError("need min_log_std < init_log_std < max_log_std")
        self.cnn_channels = tuple(self.cnn_channels)


def _conv_stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.GELU())


class SpatialSoftmax(nn.Module):
    """Expected image coordinates of learned keypoints (Levine et al. 2016): precise localisation at little cost.

    (N, C, h, w) -> (N, K, 2) with coordinates in [-1, 1], one soft-argmax per keypoint map.
    """

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.logits = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        attn = torch.softmax(self.logits(x).flatten(2), dim=-1)  # (N, K, h*w)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                                indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (h*w, 2)
        return attn @ grid


class ImageEncoder(nn.Module):
    """Shared CNN conditioned on the instruction: (N, 3, H, W), (N, d) -> (N, H/16 * W/16 + 1, d_model).

    Input pixels get two coordinate channels (CoordConv) so features know where they are. Each stage is modulated by
    the instruction (FiLM, as RT-1 does), so "red cube" and "green cylinder" select different features before any
    pooling. Three stride-2 stages and a stride-2 projection give one token per 16x16 patch, and a spatial
    soft-argmax over the 1/4-resolution features adds one token of keypoint coordinates.
    """

    def __init__(self, channels: tuple[int, ...], d_model: int, keypoints: int) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.stages = nn.ModuleList([_conv_stage(5, c1), _conv_stage(c1, c2), _conv_stage(c2, c3)])
        self.film = nn.ModuleList([nn.Linear(d_model, 2 * c) for c in channels])
        for layer in self.film:  # start as the identity modulation
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.proj = nn.Conv2d(c3, d_model, 3, stride=2, padding=1)
        self.keypoints = SpatialSoftmax(c2, keypoints)
        self.keypoint_proj = nn.Linear(2 * keypoints, d_model)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device),
                                indexing="ij")
        x = torch.cat([x, xs.expand(n, 1, h, w), ys.expand(n, 1, h, w)], dim=1)
        feats = []
        for stage, film in zip(self.stages, self.film):
            x = stage(x)
            gamma, beta = film(cond)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + gamma) + beta
            feats.append(x)
        f2 = feats[1]
        grid_tokens = self.proj(x).flatten(2).transpose(1, 2)
        keypoint_token = self.keypoint_proj(self.keypoints(f2).flatten(1)).unsqueeze(1)
        return torch.cat([grid_tokens, keypoint_token], dim=1)


class TinyVLA(nn.Module):
    """The network alone: normalised tensors in, Gaussian mean (B, K, A) and log-std (K, A) out."""

    def __init__(self, cfg: TinyVLAConfig, spec: RobotSpec, text_source: str | None = None) -> None:
        super().__init__()
        cams = spec.observation.cameras
        if len({(c.height, c.width) for c in cams}) != 1:
            raise ValueError("TinyVLA needs all cameras at one resolution")
        h, w = cams[0].height, cams[0].width
        if h % 16 or w % 16:
            raise ValueError(f"TinyVLA needs image sizes divisible by 16, got {h}x{w}")
        self.cfg, self.n_cams, A = cfg, len(cams), spec.action.dim
        n_img = (h // 16) * (w // 16) + 1
        d = cfg.d_model
        self.image_encoder = ImageEncoder(cfg.cnn_channels, d, cfg.keypoints)
        self.image_pos = nn.Parameter(torch.randn(1, self.n_cams * n_img, d) * 0.02)
        if cfg.text_encoder == "builtin":
            self.text_encoder: nn.Module = BuiltinTextEncoder(d, cfg.n_heads, cfg.text_layers, cfg.ff_mult * d,
                                                              cfg.max_text_len, cfg.dropout)
        else:
            self.text_encoder = HFTextEncoder(text_source or cfg.text_encoder, d, cfg.train_text_encoder,
                                              weights=text_source is None)
        self.proprio_proj = nn.Linear(spec.observation.proprio_dim, d)
        self.action_queries = nn.Parameter(torch.randn(1, cfg.chunk_size, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, cfg.n_heads, cfg.ff_mult * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.trunk = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, A))
        self.log_std = nn.Parameter(torch.full((cfg.chunk_size, A), cfg.init_log_std))

    def forward(self, images: torch.Tensor, proprio: torch.Tensor, text_ids: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = images.shape[0]
        if self.training:  # batches repeat a few instructions: encode each distinct one once
            unique, inverse = torch.unique(text_ids, dim=0, return_inverse=True)
            first = torch.zeros(len(unique), dtype=torch.long).scatter_(0, inverse, torch.arange(B))
            text_vec = self.text_encoder(unique, text_mask[first])[inverse]
        else:
            text_vec = self.text_encoder(text_ids, text_mask)
        cond = text_vec.repeat_interleave(self.n_cams, dim=0)
        img = self.image_encoder(images.flatten(0, 1), cond).reshape(B, -1, self.cfg.d_model) + self.image_pos
        text = text_vec.unsqueeze(1)
        prop = self.proprio_proj(proprio).unsqueeze(1)
        queries = self.action_queries.expand(B, -1, -1)
        x = self.trunk(torch.cat([text, img, prop, queries], dim=1))
        mean = self.head(x[:, -self.cfg.chunk_size :])
        log_std = self.log_std.clamp(self.cfg.min_log_std, self.cfg.max_log_std)
        return mean, log_std


def gaussian_log_prob_elements(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x_ka | mu_ka, sigma_ka^2) = -((x-mu)^2 / 2 sigma^2) - log sigma - log sqrt(2 pi), per chunk element."""
    z = (x - mean) * torch.exp(-log_std)
    return -0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x | mean, exp(log_std)^2) of the whole chunk: the element log-densities summed over (k, a)."""
    return gaussian_log_prob_elements(x, mean, log_std).sum(dim=(-2, -1))


class TinyVLAPolicy(Policy):
    """TinyVLA + its processor, implementing the ``Policy`` interface."""

    def __init__(self, cfg: TinyVLAConfig, spec: RobotSpec, stats: NormStats, version: str = "untrained",
                 text_source: str | None = None) -> None:
        """``text_source``: where a Hugging Face encoder's config/tokenizer live when loading a checkpoint."""
        super().__init__()
        self.cfg, self.spec, self.version = cfg, spec, version
        self.chunk_size = cfg.chunk_size
        if cfg.text_encoder == "builtin":
            tokenizer = ByteTokenizer(cfg.max_text_len)
        else:
            tokenizer = HFTokenizer(text_source or cfg.text_encoder, cfg.max_text_len)
        self.processor = Processor(spec, stats, tokenizer)
        self.model = TinyVLA(cfg, spec, text_source)

    @property
    def device(self) -> torch.device:
        return self.model.log_std.device

    def encode(self, obs: Observation) -> tuple[torch.Tensor, ...]:
        """Validated model inputs: images, proprio, text ids, text mask."""
        self.processor.check(obs)
        p, dev = self.processor, self.device
        return (p.images(obs, dev), p.proprio(obs, dev), *p.tokenize(obs.instructions, dev))

    def distribution(self, obs: Observation, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (B, K, A) and log-std (K, A) of the normalised chunk at ``temperature``."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        mean, log_std = self.model(*self.encode(obs))
        return mean, log_std + math.log(temperature)

    def sample(self, obs: Observation, temperature: float = 1.0, generator: Generators = None) -> PolicyOutput:
        mean, log_std = self.distribution(obs, temperature)
        noise = standard_normal(tuple(mean.shape), generator, mean.dtype, mean.device)
        x = mean + noise * log_std.exp()
        return PolicyOutput(self.processor.unnormalize_actions(x), gaussian_log_prob(x, mean, log_std),
                            mean, torch.broadcast_to(log_std, mean.shape))

    def log_prob(self, obs: Observation, chunks: torch.Tensor, temperature: float = 1.0,
                 per_element: bool = False) -> torch.Tensor:
        mean, log_std = self.distribution(obs, temperature)
        x = self.processor.normalize_actions(torch.as_tensor(chunks, dtype=mean.dtype, device=mean.device))
        if per_element:
            return gaussian_log_prob_elements(x, mean, log_std)
        return gaussian_log_prob(x, mean, log_std)

    def entropy(self, obs: Observation, temperature: float = 1.0) -> torch.Tensor:
        """Differential entropy of the diagonal Gaussian chunk: sum_{k,a} log sigma + 0.5 log(2 pi e)."""
        mean, log_std = self.distribution(obs, temperature)
        per_chunk = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum()
        return per_chunk.expand(mean.shape[0])

    @torch.no_grad()
    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        mean, _ = self.distribution(obs)
        chunk = self.processor.unnormalize_actions(mean).cpu().numpy()
        return np.clip(chunk, self.spec.action.low, self.spec.action.high)

    @torch.no_grad()
    def predict_distribution(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        mean, log_std = self.distribution(obs)
        return mean.cpu().numpy(), log_std.cpu().numpy()

    # --------------------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``model.safetensors`` + ``config.json`` atomically (temp names, then renames)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stamp_version(self)  # each saved checkpoint gets the version of exactly these weights
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": self.version,
            "config": asdict(self.cfg),
            "spec": self.spec.to_dict(),
            "norm_stats": self.processor.stats.to_dict(),
        }
        tmp_w, tmp_c = directory / f".{WEIGHTS_FILE}.tmp", directory / f".{CONFIG_FILE}.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp_w),
                  metadata={"format": CHECKPOINT_FORMAT})
        tmp_c.write_text(json.dumps(meta, indent=2))
        if isinstance(self.model.text_encoder, HFTextEncoder):  # make the checkpoint self-contained
            (directory / TEXT_DIR).mkdir(exist_ok=True)
            self.model.text_encoder.save_files(directory / TEXT_DIR)
            self.processor.tokenizer.save(directory / TEXT_DIR)
        os.replace(tmp_w, directory / WEIGHTS_FILE)
        os.replace(tmp_c, directory / CONFIG_FILE)  # config last: its presence marks a complete checkpoint
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, expected_spec: RobotSpec | None = None,
                        map_location: str = "cpu") -> "TinyVLAPolicy":
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(f"{directory}: not a checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        try:
            meta = json.loads(cfg_path.read_text())
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{cfg_path}: format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT!r}")
            spec = RobotSpec.from_dict(meta["spec"])
            cfg = TinyVLAConfig(**meta["config"])
            stats = NormStats.from_dict(meta["norm_stats"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{cfg_path}: malformed checkpoint config: {exc}") from exc
        if expected_spec is not None and spec.mismatch(expected_spec):
            raise CheckpointError(f"{directory}: checkpoint spec does not match the environment: "
                                  + "; ".join(spec.mismatch(expected_spec)))
        text_source = str(directory / TEXT_DIR) if cfg.text_encoder != "builtin" else None
        policy = cls(cfg, spec, stats, version=meta.get("version", "unknown"), text_source=text_source)
        try:
            state = load_file(str(w_path), device=map_location)
            policy.model.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
            raise CheckpointError(f"{w_path}: cannot load weights: {type(exc).__name__}: {exc}") from exc
        if "@" not in policy.version:  # saved before versions named their weights
            stamp_version(policy)
        return policy


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["CheckpointError", "TinyVLA", "TinyVLAConfig", "TinyVLAPolicy", "count_parameters", "gaussian_log_prob",
           "gaussian_log_prob_elements"]
