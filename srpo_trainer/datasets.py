"""Behaviour-cloning samples from an episode store: (observation at step t, the next K actions).

Chunks that run past the end of an episode are padded with its last action. After a *successful* ending the padding
counts in the loss (as Diffusion Policy pads): the task ended because the final action worked (a release, a last
push), so "keep doing that" is the right label, and the decisive last action is then learnt from K samples instead of
one. After a failed or truncated ending the padding is masked out (nothing says what should have come next).
Everything lives in memory as uint8 / float32 arrays (50 demos x 10 tasks at 64 px is well under 1 GB).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from srpo.episodes.schema import Episode
from srpo.episodes.store import EpisodeStore
from srpo.spec import RobotSpec
from srpo_trainer.policies.base import Observation


def select_episodes(
    store: EpisodeStore,
    tasks: list[str] | None = None,
    demos_per_task: int | None = None,
    success_only: bool = True,
    split: str | None = "train",
    source: str | None = None,
) -> list[Episode]:
    """Load the episodes to learn from: per task, the first ``demos_per_task`` by initial-state id (then time)."""
    records = store.list(split=split, success=True if success_only else None, source=source, strict=True)
    by_task = defaultdict(list)
    for r in records:
        if tasks is None or r.meta.task in tasks:
            by_task[r.meta.task].append(r)
    if tasks:
        missing = [t for t in tasks if not by_task.get(t)]
        if missing:
            raise ValueError(f"no matching episodes in {store.root} for task(s) {missing}")
    chosen = []
    for task in sorted(by_task):
        rs = sorted(by_task[task], key=lambda r: (r.meta.init_state_id if r.meta.init_state_id is not None else -1,
                                                   r.meta.created_unix))
        if demos_per_task is not None:
            if len(rs) < demos_per_task:
                raise ValueError(f"{task}: asked for {demos_per_task} demos, {store.root} has {len(rs)}")
            rs = rs[:demos_per_task]
        chosen.extend(rs)
    if not chosen:
        raise ValueError(f"no matching episodes in {store.root}")
    return [store.load(r) for r in chosen]


@dataclass
class ChunkBatch:
    obs: Observation
    chunks: torch.Tensor  # (B, K, A) env units
    mask: torch.Tensor  # (B, K) 1 where the action counts in the loss


class ChunkDataset:
    """All (step, chunk) pairs of a list of episodes."""

    def __init__(self, episodes: list[Episode], spec: RobotSpec, chunk_size: int) -> None:
        if not episodes:
            raise ValueError("ChunkDataset needs at least one episode")
        self.spec, self.K = spec, chunk_size
        self.cameras = [c.name for c in spec.observation.cameras]
        for ep in episodes:
            ep.require_labels()  # failed episodes are masked differently: the label must be known
            mismatch = RobotSpec.from_dict(ep.meta.spec).mismatch(spec)
            if mismatch:
                raise ValueError(f"episode {ep.meta.episode_id} ({ep.meta.task}) has another spec: {mismatch}")
        images = {c: [] for c in self.cameras}
        proprio, chunks, masks, texts = [], [], [], []
        self.instructions: list[str] = []
        self.tasks: list[str] = []
        sample_episode = []
        for e, ep in enumerate(episodes):
            T = ep.length
            if T == 0:
                continue
            # one sample per step that has a frame (every step, unless the episode's frames are sparse)
            has_frame = ep.image_steps < T
            steps = ep.image_steps[has_frame]
            n = len(steps)
            idx = steps[:, None] + np.arange(chunk_size)[None, :]
            masks.append(np.ones((n, chunk_size), np.float32) if ep.meta.success else (idx < T).astype(np.float32))
            chunks.append(ep.actions[np.minimum(idx, T - 1)])
            for c in self.cameras:
                images[c].append(ep.images[c][has_frame])
            proprio.append(ep.proprio[steps])
            text_id = self._text_id(ep.meta.instruction)
            texts.append(np.full(n, text_id, np.int64))
            self.tasks.extend([ep.meta.task] * n)
            sample_episode.append(np.full(n, e, np.int64))
        self.images = {c: np.concatenate(v) for c, v in images.items()}
        self.proprio = np.concatenate(proprio).astype(np.float32)
        self.chunks = np.concatenate(chunks).astype(np.float32)
        self.mask = np.concatenate(masks)
        self.text_ids = np.concatenate(texts)
        self.episodes = len(episodes)
        self.sample_episode = np.concatenate(sample_episode)
        """(N,) index into ``episodes`` of each sample (for per-episode weights)."""

    def _text_id(self, text: str) -> int:
        if text not in self.instructions:
            self.instructions.append(text)
        return self.instructions.index(text)

    def __len__(self) -> int:
        return len(self.proprio)

    def batch(self, index: np.ndarray) -> ChunkBatch:
        obs = Observation(
            images={c: self.images[c][index] for c in self.cameras},
            proprio=self.proprio[index],
            instructions=[self.instructions[i] for i in self.text_ids[index]],
        )
        return ChunkBatch(obs, torch.from_numpy(self.chunks[index]), torch.from_numpy(self.mask[index]))


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by ``pad`` pixels and crop back at a random offset per image.

    ``images``: (B, n_cams, 3, H, W) float. Each camera of each sample gets its own shift.
    """
    if pad <= 0:
        return images
    B, C, ch, H, W = images.shape
    flat = images.reshape(B * C, ch, H, W)
    padded = torch.nn.functional.pad(flat, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (B * C,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (B * C,), generator=generator)
    rows = (dy[:, None] + torch.arange(H)[None, :])  # (N, H)
    cols = (dx[:, None] + torch.arange(W)[None, :])  # (N, W)
    n = torch.arange(B * C)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]]  # (N, H, W, ch)
    return out.permute(0, 3, 1, 2).reshape(B, C, ch, H, W)
