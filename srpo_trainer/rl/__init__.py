"""Reinforcement learning for VLA policies: SRPO and its GRPO baseline (objectives now, the training loop next)."""
