"""The inference-only policy contract, and the exported-model description every graph backend reads.

An ``InferencePolicy`` maps a batch of raw observations to action chunks in env units: that is all a robot needs.
The torch policies of the trainer, the ONNX Runtime backend and the TensorRT backend all implement it, so the
evaluator, the ROS policy node and the chunker never know which one runs.

An exported model is a directory: the network graph (``model.onnx``; ``model.plan`` for a TensorRT engine) and
``policy.json``, the sidecar that makes the graph usable and checkable on its own: format, the robot spec, the
normalisation statistics, the chunk size, the fixed instruction length, the policy version, the source checkpoint's
SHA-256 and the graph's SHA-256 (a truncated or swapped graph is refused before it is loaded), and the export's own
verification against PyTorch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from srpo.runtime.observation import Observation
from srpo.runtime.processing import ByteTokenizer, NormStats, Preprocessor
from srpo.spec import RobotSpec

EXPORT_FORMAT = "srpo-onnx/1"
SIDECAR = "policy.json"
ONNX_FILE = "model.onnx"
INPUT_NAMES = ("images", "proprio", "text_ids", "text_mask")
OUTPUT_NAMES = ("action_mean", "action_log_std")
IO_DTYPES = {"images": np.dtype(np.float32), "proprio": np.dtype(np.float32), "text_ids": np.dtype(np.int64),
             "text_mask": np.dtype(np.bool_), "action_mean": np.dtype(np.float32),
             "action_log_std": np.dtype(np.float32)}
"""The element type of every tensor of an exported graph: one definition for the exporter and both graph backends."""


class ModelIntegrityError(ValueError):
    """An exported model that must not be used: missing files, a checksum mismatch, or a graph whose inputs or
    outputs do not match the spec it claims."""


@runtime_checkable
class InferencePolicy(Protocol):
    """Observation in, action chunk out. ``backend`` and ``device`` say what actually runs it."""

    spec: RobotSpec
    chunk_size: int
    version: str

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> str: ...

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        """The deterministic chunk (B, K, A) in env units, clipped to the action bounds."""

    def predict_distribution(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        """The chunk distribution in normalised units: mean (B, K, A) and log-std (K, A). What a recorder stores so
        that offline RL can recompute the acting policy's log-probabilities."""

    def reset(self) -> None:
        """Clear per-episode state (stateless policies do nothing)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ExportMeta:
    """The sidecar of an exported policy (``policy.json``)."""

    spec: dict
    norm_stats: dict
    chunk_size: int
    text_len: int
    version: str
    onnx_sha256: str
    source_checkpoint: str = ""
    source_sha256: str = ""
    tokenizer: str = "bytes"
    opset: int = 17
    verification: dict = field(default_factory=dict)
    format: str = EXPORT_FORMAT

    def robot_spec(self) -> RobotSpec:
        return RobotSpec.from_dict(self.spec)

    def stats(self) -> NormStats:
        return NormStats.from_dict(self.norm_stats)

    def write(self, directory: str | os.PathLike) -> Path:
        """Atomically (temp file, then rename): its presence marks a complete export."""
        path = Path(directory) / SIDECAR
        tmp = path.with_name(f".{SIDECAR}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike) -> "ExportMeta":
        path = Path(directory) / SIDECAR
        if not path.is_file():
            raise ModelIntegrityError(f"{directory}: not an exported policy (no {SIDECAR}); export one with "
                                      "`srpo export onnx CKPT --out DIR`")
        try:
            d = json.loads(path.read_text())
            if d.get("format") != EXPORT_FORMAT:
                raise ModelIntegrityError(f"{path}: format {d.get('format')!r}, expected {EXPORT_FORMAT!r}")
            known = set(cls.__dataclass_fields__)
            meta = cls(**{k: v for k, v in d.items() if k in known})
            meta.robot_spec(), meta.stats()  # both must parse
        except ModelIntegrityError:
            raise
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ModelIntegrityError(f"{path}: malformed sidecar: {exc}") from exc
        if meta.tokenizer != "bytes":
            raise ModelIntegrityError(f"{path}: tokenizer {meta.tokenizer!r} is not supported by the runtime "
                                      "(only the built-in byte tokenizer)")
        return meta

    def check_file(self, path: str | os.PathLike, expected_sha256: str) -> None:
        """Refuse a graph or engine whose bytes are not the ones this sidecar describes."""
        path = Path(path)
        if not path.is_file():
            raise ModelIntegrityError(f"{path}: missing")
        got = sha256_file(path)
        if got != expected_sha256:
            raise ModelIntegrityError(f"{path}: checksum mismatch (sha256 {got[:12]}..., the sidecar expects "
                                      f"{expected_sha256[:12]}...): the file is truncated, damaged or from another "
                                      "export; re-export it")


def expected_io(meta: ExportMeta) -> dict[str, tuple]:
    """Input shapes an exported graph must declare for its spec (None = dynamic batch)."""
    spec = meta.robot_spec()
    cams = spec.observation.cameras
    h, w = cams[0].height, cams[0].width
    return {"images": (None, len(cams), 3, h, w), "proprio": (None, spec.observation.proprio_dim),
            "text_ids": (None, meta.text_len), "text_mask": (None, meta.text_len)}


class GraphPolicy:
    """The shared half of the ONNX Runtime and TensorRT backends: numpy processing around a graph that maps
    (images, proprio, text_ids, text_mask) to the normalised chunk mean and log-std. Subclasses implement ``_run``."""

    backend_name = "graph"

    def __init__(self, meta: ExportMeta) -> None:
        self.meta = meta
        self.spec = meta.robot_spec()
        self.chunk_size = int(meta.chunk_size)
        self.version = meta.version
        self.processor = Preprocessor(self.spec, meta.stats(), ByteTokenizer(meta.text_len))
        self._device = "cpu"

    @property
    def backend(self) -> str:
        return self.backend_name

    @property
    def device(self) -> str:
        return self._device

    def _run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predict_distribution(self, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
        mean, log_std = self._run(self.processor.inputs(obs, self.meta.text_len))
        return np.asarray(mean, np.float32), np.asarray(log_std, np.float32)

    def predict_action_chunk(self, obs: Observation) -> np.ndarray:
        mean, _ = self.predict_distribution(obs)
        return self.processor.action_chunk(mean)

    def reset(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "version": self.version,
                "chunk_size": self.chunk_size}


__all__ = ["EXPORT_FORMAT", "ExportMeta", "GraphPolicy", "INPUT_NAMES", "IO_DTYPES", "InferencePolicy", "ModelIntegrityError",
           "ONNX_FILE", "OUTPUT_NAMES", "SIDECAR", "expected_io", "sha256_file"]
