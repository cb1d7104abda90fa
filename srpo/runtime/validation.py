"""Validate a candidate policy before it may drive an arm. Torch-free; the policy node runs it on every push.

``validate_candidate`` loads the candidate beside the running policy and accepts it only if every check passes:

1. integrity: a registry version's files match its manifest; the export's graph matches its sidecar checksum;
2. spec: the candidate's cameras, image size, proprio and action names and control rate are the robot's;
3. smoke inference on recorded observations (what the robot actually saw): every chunk and scale finite, and the
   unclipped chunk inside the action bounds up to ``max_overshoot`` (a policy that asks for far more than the arm
   can do is broken, even if clipping would hide it);
4. latency: after one warm-up call, the slowest smoke call within ``latency_budget_s``.

Any failure raises ``CandidateRejected`` naming the check; the caller keeps its current policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srpo.runtime.observation import Observation
from srpo.runtime.policy import InferencePolicy, ModelIntegrityError
from srpo.spec import RobotSpec


class CandidateRejected(ValueError):
    """A candidate policy that failed validation; the message names the check."""


@dataclass
class ValidationConfig:
    """Acceptance thresholds for pushed policies (the policy node's parameters use the same names)."""

    latency_budget_s: float = 0.05
    smoke_calls: int = 5
    max_overshoot: float = 0.5

    def __post_init__(self) -> None:
        if not self.latency_budget_s > 0 or self.smoke_calls < 2 or not self.max_overshoot >= 0:
            raise ValueError("need latency_budget_s > 0, smoke_calls >= 2 and max_overshoot >= 0")


@dataclass
class ValidationReport:
    version: str
    backend: str
    device: str
    checks: list[str] = field(default_factory=list)
    max_latency_s: float = 0.0
    max_overshoot: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def validate_candidate(path: str | Path, spec: RobotSpec, observations: list[Observation],
                       config: ValidationConfig | None = None, backend: str = "auto"
                       ) -> tuple[InferencePolicy, ValidationReport]:
    """Load and check the policy at ``path``; returns it with the report, or raises ``CandidateRejected``."""
    from srpo.runtime.loading import BackendUnavailable, load_inference_policy
    from srpo.runtime.registry import MANIFEST, RegistryEntry

    cfg = config or ValidationConfig()
    path = Path(path)
    checks = []
    try:
        if (path / MANIFEST).is_file():
            RegistryEntry.read(path).verify()
            checks.append("registry manifest checksums")
        policy = load_inference_policy(path, backend)
    except (ModelIntegrityError, BackendUnavailable, FileNotFoundError, ValueError, OSError) as exc:
        raise CandidateRejected(f"integrity: {exc}") from exc
    checks.append(f"loaded on {policy.backend} ({policy.device}), graph checksum")
    mismatch = policy.spec.mismatch(spec)
    if mismatch:
        raise CandidateRejected("spec: " + "; ".join(mismatch))
    checks.append("spec matches the robot")
    if not observations:
        raise CandidateRejected("smoke: no recorded observation to test on yet")
    report = ValidationReport(policy.version, policy.backend, policy.device, checks)
    low, high = spec.action.low, spec.action.high
    times = []
    for k in range(max(cfg.smoke_calls, 2)):
        obs = observations[k % len(observations)]
        t0 = time.perf_counter()
        try:
            mean, log_std = policy.predict_distribution(obs)
        except Exception as exc:  # noqa: BLE001 - any failure of the candidate's graph rejects it
            raise CandidateRejected(f"smoke: inference failed: {type(exc).__name__}: {exc}") from exc
        times.append(time.perf_counter() - t0)
        chunk = policy.processor.unnormalize_actions(mean)
        if not (np.all(np.isfinite(chunk)) and np.all(np.isfinite(log_std))):
            raise CandidateRejected("smoke: the policy produced non-finite actions or scales")
        overshoot = float(np.max(np.maximum(chunk - high, low - chunk), initial=0.0))
        report.max_overshoot = max(report.max_overshoot, overshoot)
        if overshoot > cfg.max_overshoot:
            raise CandidateRejected(f"smoke: actions reach {overshoot:.2f} beyond the bounds [{low}, {high}] "
                                    f"(max {cfg.max_overshoot})")
    report.max_latency_s = max(times[1:])  # the first call warms up
    if report.max_latency_s > cfg.latency_budget_s:
        raise CandidateRejected(f"latency: {report.max_latency_s * 1e3:.1f} ms per inference, the budget is "
                                f"{cfg.latency_budget_s * 1e3:.1f} ms")
    report.checks += [f"smoke inference on {len(observations)} recorded observations: finite, in range",
                      f"latency {report.max_latency_s * 1e3:.1f} ms <= {cfg.latency_budget_s * 1e3:.1f} ms"]
    return policy, report


__all__ = ["CandidateRejected", "ValidationConfig", "ValidationReport", "validate_candidate"]
