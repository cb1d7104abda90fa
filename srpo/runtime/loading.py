"""Open a policy for inference on the best backend this machine has, and say why.

    policy = load_inference_policy("exports/sft", backend="auto")
    policy.backend, policy.device          # e.g. ("onnxruntime", "cpu")

``auto`` tries, in order: a TensorRT engine in the directory (needs ``tensorrt``, a GPU and an engine built for
this TensorRT and GPU), ONNX Runtime on the exported graph (GPU providers first when onnxruntime-gpu is installed),
then PyTorch on the checkpoint (the directory itself, or the source checkpoint recorded in the export's sidecar).
Every rejected option is logged with its reason, and ``BackendChoice.reasons`` keeps them.

The torch backend belongs to the trainer (it needs torch); it plugs in through the ``srpo.backends`` entry point
group, so this core module never imports the trainer.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from srpo.runtime.policy import ONNX_FILE, SIDECAR, ExportMeta, InferencePolicy, ModelIntegrityError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
ENTRY_POINT_GROUP = "srpo.backends"


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run this policy here; the message says why."""


@dataclass
class BackendChoice:
    backend: str
    reasons: list[str] = field(default_factory=list)


def torch_checkpoint(path: Path) -> Path | None:
    """The torch checkpoint behind ``path``: itself, or the source recorded in an export's sidecar."""
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    if (path / SIDECAR).is_file():
        try:
            source = json.loads((path / SIDECAR).read_text()).get("source_checkpoint")
        except (OSError, json.JSONDecodeError):
            return None
        if source and (Path(source) / "config.json").is_file():
            return Path(source)
    return None


def _torch_loader():
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == "torch":
            return ep.load()
    return None


def _why_not(backend: str, path: Path) -> str | None:
    """None if ``backend`` can run the policy at ``path`` here, else the reason."""
    if backend == "tensorrt":
        from srpo.runtime.tensorrt_backend import ENGINE_FILE, ENGINE_SIDECAR, EngineMeta, engine_compatible, \
            tensorrt_status

        if not (path / ENGINE_FILE).is_file():
            return f"no TensorRT engine ({ENGINE_FILE}) in {path}; build one with export/to_trt.py"
        ok, reason = tensorrt_status()
        if not ok:
            return reason
        try:
            return engine_compatible(EngineMeta.read(path / ENGINE_SIDECAR))
        except ModelIntegrityError as exc:
            return str(exc)
    if backend == "onnxruntime":
        if not (path / ONNX_FILE).is_file() or not (path / SIDECAR).is_file():
            return f"no exported ONNX model ({ONNX_FILE} + {SIDECAR}) in {path}; export one with `srpo export onnx`"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None
    if backend == "torch":
        if torch_checkpoint(path) is None:
            return f"no torch checkpoint at {path} (nor a source checkpoint recorded in its {SIDECAR})"
        if _torch_loader() is None:
            return "the torch backend is not installed (pip install 'srpo[train]')"
        return None
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def choose_backend(path: str | os.PathLike, backend: str = "auto") -> BackendChoice:
    """The backend that will run the policy at ``path``; raises ``BackendUnavailable`` with every reason if none can."""
    path = Path(path)
    if not path.is_dir():
        raise BackendUnavailable(f"{path}: no such policy directory")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    order = ("tensorrt", "onnxruntime", "torch") if backend == "auto" else (backend,)
    reasons = []
    for name in order:
        why = _why_not(name, path)
        if why is None:
            return BackendChoice(name, reasons)
        reasons.append(f"{name}: {why}")
        if backend == "auto":
            log.info("backend %s skipped: %s", name, why)
    raise BackendUnavailable(f"{path}: no backend can run this policy here; " + "; ".join(reasons))


def load_inference_policy(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
                          expected_spec=None) -> InferencePolicy:
    """Open the policy at ``path`` on ``backend`` (``auto``: the best available, see the module docstring)."""
    path = Path(path)
    choice = choose_backend(path, backend)
    if choice.backend == "tensorrt":
        from srpo.runtime.tensorrt_backend import TensorRTPolicy

        policy = TensorRTPolicy(path)
    elif choice.backend == "onnxruntime":
        from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy

        policy = OnnxRuntimePolicy(path, threads=threads)
    else:
        policy = _torch_loader()(torch_checkpoint(path))
    if expected_spec is not None and policy.spec.mismatch(expected_spec):
        raise ModelIntegrityError(f"{path}: the policy's spec does not match this robot: "
                                  + "; ".join(policy.spec.mismatch(expected_spec)))
    log.info("policy %s: backend %s on %s%s", policy.version, policy.backend, policy.device,
             f" ({'; '.join(choice.reasons)})" if choice.reasons else "")
    policy.backend_reasons = choice.reasons
    return policy


__all__ = ["BACKENDS", "BackendChoice", "BackendUnavailable", "choose_backend", "load_inference_policy",
           "torch_checkpoint"]
