"""The torch-free deployment runtime: observation processing, inference backends and chunk serving.

Everything here imports with numpy alone (onnxruntime and tensorrt are optional and imported when used), so a robot
can install the core package without torch. ``load_inference_policy`` opens an exported model or a checkpoint on the
best available backend; ``ActionChunker`` serves one action per control tick from the policy's chunks.
"""

from srpo.runtime.loading import BACKENDS, BackendUnavailable, choose_backend, load_inference_policy
from srpo.runtime.observation import Observation, ObservationError
from srpo.runtime.policy import ExportMeta, InferencePolicy, ModelIntegrityError
from srpo.runtime.processing import ByteTokenizer, NormStats, Preprocessor

__all__ = ["BACKENDS", "BackendUnavailable", "ByteTokenizer", "ExportMeta", "InferencePolicy", "ModelIntegrityError",
           "NormStats", "Observation", "ObservationError", "Preprocessor", "choose_backend", "load_inference_policy"]
