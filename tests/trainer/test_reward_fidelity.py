"""Fidelity metrics on synthetic data where the answer is known: the oracle ceiling and within-group ranking."""

import numpy as np
import pytest

from srpo_trainer.encoders.base import TrajectoryEncoder
from srpo_trainer.progress_reward import ProgressRewardConfig
from srpo_trainer.reward_fidelity import FidelityConfig, oracle_bound, reward_fidelity


class BrightnessEncoder(TrajectoryEncoder):
    """Embeds a clip by its last frame's mean brightness: a perfect progress encoder for the videos below."""

    name = "brightness"

    @property
    def dim(self) -> int:
        return 1

    def _encode_batch(self, videos):
        return np.array([[v[-1].mean() / 255.0] for v in videos])


def make_videos(rng):
    """Two tasks x 3 prompts; per prompt 2 successes (progress 1) and 4 failures at distinct progress levels.

    The frame brightness equals progress; prompts add a per-prompt brightness offset, as a layout would."""
    videos = {}
    for task in ("a", "b"):
        items = []
        for prompt in range(3):
            offset = 0.3 * prompt
            for p in [1.0, 1.0, *rng.uniform(0.05, 0.9, size=4)]:
                frame = np.full((4, 8, 8, 3), int(round(255 * (p + offset) / 1.6)), np.uint8)
                items.append((frame, bool(p == 1.0), float(p), prompt))
        videos[task] = items
    return videos


def test_oracle_bound_is_perfect_within_groups_and_capped_when_pooled():
    videos = make_videos(np.random.default_rng(0))
    per_prompt = oracle_bound(videos, FidelityConfig(reward=ProgressRewardConfig(reference="prompt")))
    per_task = oracle_bound(videos, FidelityConfig(reward=ProgressRewardConfig(reference="task")))
    assert per_prompt["spearman_within_group"] == pytest.approx(1.0)
    assert per_task["spearman_task_mean"] == pytest.approx(1.0) and per_task["spearman_overall"] > 0.95
    # min-max normalisation inside each prompt group maps every group's best failure to the same reward
    assert per_prompt["spearman_overall"] < per_task["spearman_overall"] - 0.1


def test_a_perfect_encoder_reaches_the_oracle_with_prompt_references_but_not_across_layouts():
    videos = make_videos(np.random.default_rng(1))
    enc = BrightnessEncoder()
    prompt = reward_fidelity(enc, videos, FidelityConfig(reward=ProgressRewardConfig(reference="prompt")))
    bound = oracle_bound(videos, FidelityConfig(reward=ProgressRewardConfig(reference="prompt")))
    assert prompt["spearman_within_group"] == pytest.approx(1.0)
    assert prompt["spearman_overall"] == pytest.approx(bound["spearman_overall"])
    task = reward_fidelity(enc, videos, FidelityConfig(reward=ProgressRewardConfig(reference="task")))
    assert task["spearman_overall"] < prompt["spearman_within_group"]  # the layout offset confuses task references
