"""Typed YAML configuration with command-line overrides."""

import pytest

from srpo.config import ConfigError, load_config
from srpo_trainer.sft import SFTConfig


def test_yaml_plus_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 10\npolicy:\n  d_model: 64\n  n_heads: 2\n")
    cfg = load_config(SFTConfig, f, ["demos_per_task=2", "policy.n_layers=1", "tasks=[open_drawer, press_button]"])
    assert cfg.steps == 10 and cfg.demos_per_task == 2
    assert cfg.policy.d_model == 64 and cfg.policy.n_layers == 1 and cfg.policy.n_heads == 2
    assert cfg.tasks == ["open_drawer", "press_button"]


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 reads 5e-5 as a string; a learning rate written that way must still work
    assert load_config(SFTConfig, None, ["lr=5e-5"]).lr == 5e-5
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(SFTConfig, None, ["lr=fast"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("stepz=3", "unknown field"),
        ("steps=many", "expected an integer"),
        ("steps=0", "steps must be >= 1"),
        ("policy.d_model=130", "divisible"),
        ("policy.nope=1", "unknown field"),
        ("steps", "key=value"),
    ],
)
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SFTConfig, None, [override])


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(SFTConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["quick", "srpo", "srpo_paper", "srpo_paper_scale", "srpo_rwr", "srpo_concentrated",
                                  "grpo", "libero_spatial_quick"])
def test_every_shipped_rl_config_loads(name):
    """The RL configs the README's commands name are valid RLConfigs (a typo in one fails here, not in a long run)."""
    from pathlib import Path

    from srpo_trainer.rl.config import RLConfig

    cfg = load_config(RLConfig, Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml", [])
    assert cfg.steps >= 1 and cfg.rollout.group_size >= 1


def test_the_concentrated_config_is_the_measured_setting():
    """configs/srpo_concentrated.yaml is what the rollout-concentration benchmark measured: reward-weighted regression
    over 16 x 16 rollouts per step drawn from 10 train states per task, std 0.4, 150 regression steps."""
    from pathlib import Path

    from srpo_trainer.rl.config import RLConfig

    cfg = load_config(RLConfig, Path(__file__).resolve().parents[2] / "configs" / "srpo_concentrated.yaml", [])
    assert (cfg.update.loss, cfg.reward.mode, cfg.rollout.train_states) == ("rwr", "srpo", 10)
    assert (cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.steps) == (16, 16, 8)
    assert (cfg.exploration.std_mode, cfg.exploration.std, cfg.update.regression.steps) == ("fixed", 0.4, 150)
