"""The ONNX Runtime backend: an exported policy (``model.onnx`` + ``policy.json``) behind ``InferencePolicy``.

It checks before it runs: the graph's SHA-256 against the sidecar (a truncated or swapped file is refused), and the
graph's inputs and outputs against the spec the sidecar claims. Execution providers are chosen in the order
TensorRT, CUDA, CPU among those the installed onnxruntime offers (``onnxruntime-gpu`` offers the first two), and
``device`` reports the one the session actually uses.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from srpo.runtime.policy import (INPUT_NAMES, IO_DTYPES, ONNX_FILE, OUTPUT_NAMES, ExportMeta, GraphPolicy,
                                 ModelIntegrityError, expected_io)

log = logging.getLogger(__name__)
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_ORT_TYPE_NAMES = {np.dtype(np.float32): "tensor(float)", np.dtype(np.int64): "tensor(int64)",
                   np.dtype(np.bool_): "tensor(bool)"}


class OnnxRuntimeUnavailable(RuntimeError):
    """onnxruntime is not installed."""


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxRuntimeUnavailable("onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu "
                                     "(CUDA/TensorRT providers), never both; or pip install 'srpo[export]'") from exc
    return onnxruntime


def preferred_providers(available: list[str] | None = None) -> list[str]:
    """The execution providers to ask for, best first, among the available ones."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    return [p for p in PROVIDER_ORDER if p in available] or ["CPUExecutionProvider"]


class OnnxRuntimePolicy(GraphPolicy):
    """An exported policy run by ONNX Runtime."""

    backend_name = "onnxruntime"

    def __init__(self, directory: str | os.PathLike, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        directory = Path(directory)
        meta = ExportMeta.read(directory)
        path = directory / ONNX_FILE
        meta.check_file(path, meta.onnx_sha256)
        super().__init__(meta)
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # provider fallbacks are reported through ``device`` instead
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or preferred_providers())
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for damaged graphs
            raise ModelIntegrityError(f"{path}: ONNX Runtime cannot load it: {type(exc).__name__}: {exc}") from exc
        self._check_io(meta, path)
        used = self.session.get_providers()[0]
        self._device = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
                        "TensorrtExecutionProvider": "cuda (TensorRT EP)"}.get(used, used)
        log.info("onnxruntime %s: %s on %s", ort.__version__, path, self._device)

    def _check_io(self, meta: ExportMeta, path: Path) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if sorted(inputs) != sorted(INPUT_NAMES) or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise ModelIntegrityError(f"{path}: graph inputs {sorted(inputs)} / outputs {outputs}, expected "
                                      f"{list(INPUT_NAMES)} / {list(OUTPUT_NAMES)}")
        for name, want in expected_io(meta).items():
            got = tuple(d if isinstance(d, int) else None for d in inputs[name].shape)
            want_type = _ORT_TYPE_NAMES[IO_DTYPES[name]]
            if got != want or inputs[name].type != want_type:
                raise ModelIntegrityError(f"{path}: input {name!r} is {inputs[name].type} {got}, the spec in the sidecar "
                                          f"needs {want_type} {want} (None = any batch)")

    def _run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        mean, log_std = self.session.run(list(OUTPUT_NAMES), inputs)
        return mean, log_std


__all__ = ["OnnxRuntimePolicy", "OnnxRuntimeUnavailable", "PROVIDER_ORDER", "import_onnxruntime",
           "preferred_providers"]
