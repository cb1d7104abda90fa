"""The TensorRT backend: an exported policy run as a TensorRT engine on an NVIDIA GPU.

An engine directory is an exported model directory (``policy.json``, usually ``model.onnx`` too) plus the engine
built from it by ``export/to_trt.py``: ``model.plan`` (the serialised engine) and ``engine.json`` (``EngineMeta``: the
TensorRT version and GPU it was built for, its precision, the batch range of its optimisation profile, and the
SHA-256 of both the ONNX graph it came from and the plan itself).

A TensorRT engine is specific to the TensorRT version and the GPU model that built it; loading one elsewhere fails
or, worse, misbehaves. So ``TensorRTPolicy`` refuses, before deserialising anything, an engine whose bytes are not
the ones ``engine.json`` describes, an engine built from another graph than the ``policy.json`` beside it, and an
engine built with another TensorRT or for another GPU (``engine_compatible``): each with a message that says to
rebuild it with ``export/to_trt.py``.

Nothing here needs torch, and ``tensorrt`` and cuda-python are imported only when an engine is built or run, so
this module imports on any machine; ``tensorrt_status()`` says, without raising, whether this one can run engines.
GPU memory and streams come from cuda-python's runtime bindings (not torch, not pycuda): a robot image then needs
only ``tensorrt`` and ``cuda-python`` besides numpy.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from srpo.runtime.policy import INPUT_NAMES, IO_DTYPES, OUTPUT_NAMES, ExportMeta, GraphPolicy, ModelIntegrityError

ENGINE_FILE = "model.plan"
ENGINE_SIDECAR = "engine.json"
PRECISIONS = ("fp32", "fp16")

# The dtypes the exported graph's tensors have (see srpo.runtime.policy.INPUT_NAMES / OUTPUT_NAMES). TensorRT keeps
# the I/O dtypes of the ONNX graph even in an FP16 build (only the internal layers run in half precision).
EXPECTED_DTYPES: dict[str, np.dtype] = IO_DTYPES
# Token ids are < 259, so an engine whose parser narrowed them to int32 (TensorRT before 10 had no int64 I/O) is
# still exact: the inputs are cast to the engine's dtype before the copy.
_ALSO_ACCEPTED = {"text_ids": (np.dtype(np.int32),)}

_REBUILD = "rebuild it on this machine with `python export/to_trt.py DIR/model.onnx --out DIR`"


class TensorRTUnavailable(RuntimeError):
    """This machine cannot build or run TensorRT engines; the message says what is missing and how to get it."""


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


# ------------------------------------------------------------------------------------------------ availability
MSG_NO_TENSORRT = ("tensorrt is not installed: pip install tensorrt-cu12 (needs an NVIDIA GPU and driver); "
                   "the ONNX Runtime backend runs without it")
MSG_NO_CUDA_PYTHON = ("cuda-python is not installed: pip install cuda-python (the TensorRT backend's GPU memory and "
                      "streams)")
MSG_NO_GPU = ("no NVIDIA GPU visible (nvidia-smi / CUDA driver not found): TensorRT needs one; "
              "the ONNX Runtime backend runs without it")


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(MSG_NO_TENSORRT) from exc
    return trt


def _import_cudart():
    """cuda-python's runtime API: ``cuda.bindings.runtime`` (cuda-python >= 12.6), else the older ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise TensorRTUnavailable(MSG_NO_CUDA_PYTHON) from exc
    return cudart


def _cuda_error_text(cudart, err) -> str:
    """'cudaErrorNoDevice: no CUDA-capable device is detected' (as far as the bindings can tell)."""
    name = getattr(err, "name", str(err))
    try:
        res = cudart.cudaGetErrorString(err)
        text = res[1] if isinstance(res, tuple) else res
        text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    except Exception:  # noqa: BLE001 - only decoration of an error that is reported anyway
        return str(name)
    return f"{name}: {text}"


def _cuda_check(cudart, result, what: str):
    """Unwrap a cuda-python call's ``(err, *values)``: raise ``CudaError`` naming the call unless err is success;
    return None, the single value or the tuple of values."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise CudaError(f"{what} failed: {_cuda_error_text(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _gpu_count_via_cudart(cudart) -> tuple[int, str]:
    """(number of CUDA devices, why none) from the CUDA runtime; never raises."""
    try:
        res = cudart.cudaGetDeviceCount()
    except Exception as exc:  # noqa: BLE001 - a broken driver install must read as "no GPU", not crash a probe
        return 0, f"cudaGetDeviceCount raised {type(exc).__name__}: {exc}"
    err, count = res[0], (res[1] if len(res) > 1 else 0)
    if err != cudart.cudaError_t.cudaSuccess:
        return 0, _cuda_error_text(cudart, err)
    return int(count), "cudaGetDeviceCount() = 0"


def _gpu_visible_via_tensorrt(trt) -> bool:
    """Without cuda-python, the only portable probe is TensorRT itself: creating a Builder initialises CUDA and
    fails (None, or a TypeError from the binding's factory) when there is no usable GPU."""
    try:
        return trt.Builder(trt.Logger(trt.Logger.ERROR)) is not None
    except Exception:  # noqa: BLE001
        return False


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str]:
    # Cached: the answer does not change during a process, and it is asked at test collection and per policy.
    try:
        trt = _import_tensorrt()
    except TensorRTUnavailable as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - e.g. a tensorrt wheel whose shared libraries do not load
        return False, (f"tensorrt fails to import ({type(exc).__name__}: {exc}): reinstall it with "
                       "pip install tensorrt-cu12")
    try:
        cudart = _import_cudart()
    except TensorRTUnavailable as exc:
        # Say "no GPU" rather than "install cuda-python" when installing it would not help.
        return (False, MSG_NO_GPU) if not _gpu_visible_via_tensorrt(trt) else (False, str(exc))
    except Exception as exc:  # noqa: BLE001
        return False, f"cuda-python fails to import ({type(exc).__name__}: {exc}): pip install cuda-python"
    count, why = _gpu_count_via_cudart(cudart)
    if count < 1:
        return False, f"{MSG_NO_GPU} ({why})"
    return True, f"TensorRT {trt.__version__}, {count} CUDA device(s)"


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason): whether this machine can build and run TensorRT engines (tensorrt and cuda-python
    importable and a CUDA device present) and, if not, why. Never raises; for test skips and backend selection."""
    return _probe()


def require_tensorrt() -> None:
    """Raise ``TensorRTUnavailable`` (with the reason from ``tensorrt_status``) unless engines can run here."""
    ok, reason = tensorrt_status()
    if not ok:
        raise TensorRTUnavailable(reason)


def _running_platform(device: int = 0) -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability "major.minor") of this machine: what an engine must have
    been built for. A separate function so that tests can pretend to be another machine."""
    require_tensorrt()
    trt, cudart = _import_tensorrt(), _import_cudart()
    props = _cuda_check(cudart, cudart.cudaGetDeviceProperties(device), f"cudaGetDeviceProperties({device})")
    name = props.name
    name = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return str(trt.__version__), name.split("\x00", 1)[0].strip(), f"{props.major}.{props.minor}"


# --------------------------------------------------------------------------------------------------- metadata
@dataclass
class EngineMeta:
    """The sidecar of a TensorRT engine (``engine.json``): what it was built with and from, and for which batches."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    onnx_sha256: str
    engine_sha256: str
    min_batch: int
    opt_batch: int
    max_batch: int
    build_seconds: float

    def validate(self) -> None:
        for name in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "engine_sha256"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        for name in ("min_batch", "opt_batch", "max_batch"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}/"
                             f"{self.opt_batch}/{self.max_batch}")
        if isinstance(self.build_seconds, bool) or not isinstance(self.build_seconds, (int, float)):
            raise ValueError(f"build_seconds must be a number, got {self.build_seconds!r}")

    def write(self, directory: str | os.PathLike) -> Path:
        """Atomically (temp file, then rename), so that a reader never sees half a sidecar; written last by the
        builder, its presence marks a complete engine directory."""
        self.validate()
        path = Path(directory) / ENGINE_SIDECAR
        tmp = path.with_name(f".{ENGINE_SIDECAR}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike) -> "EngineMeta":
        """From an engine directory (or the path of its ``engine.json`` itself)."""
        path = Path(directory)
        if not (path.name == ENGINE_SIDECAR and not path.is_dir()):
            path = path / ENGINE_SIDECAR
        directory = path.parent
        if not path.is_file():
            raise ModelIntegrityError(f"{directory}: no TensorRT engine ({ENGINE_SIDECAR} is missing); build one with "
                                      "`python export/to_trt.py DIR/model.onnx --out DIR`")
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise ValueError(f"expected a JSON object, got {type(d).__name__}")
            names = {f.name for f in fields(cls)}
            missing = sorted(names - set(d))
            if missing:
                raise ValueError(f"missing fields {missing}")
            meta = cls(**{k: d[k] for k in names})
            meta.validate()
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError) as exc:
            raise ModelIntegrityError(f"{path}: malformed engine sidecar: {exc}; rebuild the engine with "
                                      "`python export/to_trt.py`") from exc
        return meta


def engine_compatible(meta: EngineMeta, device: int = 0) -> str | None:
    """None if an engine described by ``meta`` can run on this machine, else why not. An engine is only valid for
    the TensorRT version and GPU model that built it (TensorRT's documented default: no version or hardware
    compatibility unless built with those options, which cost speed)."""
    try:
        version, gpu, capability = _running_platform(device)
    except TensorRTUnavailable as exc:
        return str(exc)
    if meta.tensorrt_version != version:
        return (f"engine was built with TensorRT {meta.tensorrt_version}, this machine runs TensorRT {version}: "
                "engines are not portable across TensorRT versions")
    if meta.gpu_name != gpu or meta.compute_capability != capability:
        return (f"engine was built for GPU {meta.gpu_name!r} (compute capability {meta.compute_capability}), this "
                f"machine has {gpu!r} (compute capability {capability}): engines are tuned for one GPU model")
    return None


# ------------------------------------------------------------------------------------------------------ policy
def _numpy_dtype(trt, dtype) -> np.dtype:
    """The numpy dtype of a TensorRT DataType; a clear error for those numpy cannot hold (bf16, fp8, int4)."""
    table = {}
    for trt_name, np_type in (("FLOAT", np.float32), ("HALF", np.float16), ("INT64", np.int64), ("INT32", np.int32),
                              ("BOOL", np.bool_), ("INT8", np.int8), ("UINT8", np.uint8)):
        value = getattr(trt.DataType, trt_name, None)  # not every TensorRT version has every type
        if value is not None:
            table[value] = np.dtype(np_type)
    if dtype not in table:
        raise ModelIntegrityError(f"engine tensor dtype {dtype} has no numpy equivalent; this backend supports "
                                  f"{sorted(str(k) for k in table)}")
    return table[dtype]


class _DeviceBuffer:
    """One device allocation that is reused across calls and only grows."""

    __slots__ = ("ptr", "nbytes")

    def __init__(self) -> None:
        self.ptr, self.nbytes = 0, 0


class TensorRTPolicy(GraphPolicy):
    """An exported policy run by TensorRT: numpy pre/post-processing (``GraphPolicy``) around a serialised engine.

    ``directory`` holds ``policy.json``, ``model.plan`` and ``engine.json`` (as written by ``export/to_trt.py``).
    Batches must lie within the engine's optimisation profile [min_batch, max_batch]. Calls from several threads
    are serialised by a lock (they share the execution context and the device buffers). Call ``close()`` (or use
    it as a context manager) to free the GPU memory deterministically rather than at garbage collection.
    """

    backend_name = "tensorrt"

    def __init__(self, directory: str | os.PathLike, device: int = 0) -> None:
        self.directory = Path(directory)
        self._closed = True  # until the GPU resources exist, close() has nothing to free
        self._buffers: dict[str, _DeviceBuffer] = {}
        self._stream = None
        # Integrity first: these need neither TensorRT nor a GPU, and a damaged engine directory must say so even on
        # a machine that could not run it anyway.
        meta = ExportMeta.read(self.directory)
        self.engine_meta = EngineMeta.read(self.directory)
        plan = self.directory / ENGINE_FILE
        meta.check_file(plan, self.engine_meta.engine_sha256)
        if self.engine_meta.onnx_sha256 != meta.onnx_sha256:
            raise ModelIntegrityError(f"{plan}: engine was built from another ONNX graph (sha256 "
                                      f"{self.engine_meta.onnx_sha256[:12]}...) than the one {self.directory}/"
                                      f"policy.json describes ({meta.onnx_sha256[:12]}...); {_REBUILD}")
        super().__init__(meta)

        require_tensorrt()
        self._device_index = int(device)
        reason = engine_compatible(self.engine_meta, self._device_index)
        if reason is not None:
            raise ModelIntegrityError(f"{plan}: cannot be used here: {reason}; {_REBUILD}")

        trt, self._cudart = _import_tensorrt(), _import_cudart()
        self._cuda(self._cudart.cudaSetDevice(self._device_index), f"cudaSetDevice({self._device_index})")
        _, gpu_name, _ = _running_platform(self._device_index)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self._engine is None:
            raise ModelIntegrityError(f"{plan}: TensorRT could not deserialise the engine (see its log above); "
                                      f"{_REBUILD}")
        self._dtypes = self._check_io(trt)
        self.min_batch, self.max_batch = self._profile_batches(trt)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"{plan}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = self._cuda(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers = {name: _DeviceBuffer() for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
        self._lock = threading.Lock()
        self._closed = False
        self._device = f"cuda:{self._device_index} ({gpu_name})"

    # --------------------------------------------------------------------------------------------- set-up checks
    def _cuda(self, result, what: str):
        return _cuda_check(self._cudart, result, what)

    def _check_io(self, trt) -> dict[str, np.dtype]:
        """The engine's I/O must be exactly the exported graph's: the four inputs and two outputs, by name,
        direction and dtype. Returns the numpy dtype per tensor."""
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        if inputs != sorted(INPUT_NAMES) or outputs != sorted(OUTPUT_NAMES):
            raise ModelIntegrityError(f"{self.directory / ENGINE_FILE}: engine has inputs {inputs} and outputs "
                                      f"{outputs}, expected {sorted(INPUT_NAMES)} and {sorted(OUTPUT_NAMES)}")
        dtypes = {}
        for name in names:
            got = _numpy_dtype(trt, engine.get_tensor_dtype(name))
            if got != EXPECTED_DTYPES[name] and got not in _ALSO_ACCEPTED.get(name, ()):
                raise ModelIntegrityError(f"{self.directory / ENGINE_FILE}: tensor {name!r} is {got}, the exported "
                                          f"graph's is {EXPECTED_DTYPES[name]}; {_REBUILD}")
            dtypes[name] = got
        return dtypes

    def _profile_batches(self, trt) -> tuple[int, int]:
        """The batch range of the engine's optimisation profile 0, cross-checked against engine.json."""
        lo, hi = self.engine_meta.min_batch, self.engine_meta.max_batch
        try:
            shapes = self._engine.get_tensor_profile_shape(INPUT_NAMES[0], 0)  # [min, opt, max] shapes
        except (AttributeError, TypeError):  # an API variant we cannot read: trust engine.json (its sha256 held)
            return lo, hi
        got = (int(shapes[0][0]), int(shapes[-1][0]))
        if got != (lo, hi):
            raise ModelIntegrityError(f"{self.directory / ENGINE_FILE}: engine's batch profile is {got[0]}..{got[1]} "
                                      f"but {ENGINE_SIDECAR} says {lo}..{hi}; {_REBUILD}")
        return got

    # -------------------------------------------------------------------------------------------------- running
    def _ensure(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name`` (reallocated only when the batch grows)."""
        buf = self._buffers[name]
        if buf.nbytes < nbytes:
            if buf.ptr:
                self._cuda(self._cudart.cudaFree(buf.ptr), f"cudaFree({name})")
                buf.ptr, buf.nbytes = 0, 0
            buf.ptr = int(self._cuda(self._cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes} bytes, {name})"))
            buf.nbytes = nbytes
        return buf.ptr

    def _run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self._closed:
            raise RuntimeError("TensorRTPolicy is closed")
        missing = [n for n in INPUT_NAMES if n not in inputs]
        if missing:
            raise ValueError(f"missing engine inputs {missing}")
        # Host arrays in the engine's dtypes, C-contiguous: the copies below read raw memory.
        host = {n: np.ascontiguousarray(inputs[n], dtype=self._dtypes[n]) for n in INPUT_NAMES}
        batches = {n: (a.shape[0] if a.ndim else None) for n, a in host.items()}
        if len(set(batches.values())) != 1:
            raise ValueError(f"inputs disagree on the batch size: {batches}")
        batch = batches[INPUT_NAMES[0]]
        if batch is None or not self.min_batch <= batch <= self.max_batch:
            raise ValueError(f"batch {batch} is outside the engine's optimisation profile "
                             f"[{self.min_batch}, {self.max_batch}]: split the batch, or rebuild the engine with "
                             "`python export/to_trt.py ... --max-batch N`")
        cudart = self._cudart
        with self._lock:
            if self._closed:  # closed by another thread while this one waited
                raise RuntimeError("TensorRTPolicy is closed")
            self._cuda(cudart.cudaSetDevice(self._device_index), "cudaSetDevice")  # per thread in the runtime API
            ctx = self._context
            for name, arr in host.items():
                if not ctx.set_input_shape(name, tuple(int(s) for s in arr.shape)):
                    raise ValueError(f"engine rejects input {name!r} of shape {arr.shape} (see the TensorRT log)")
            outputs = {}
            for name in OUTPUT_NAMES:
                shape = tuple(int(s) for s in ctx.get_tensor_shape(name))
                if any(s < 0 for s in shape):
                    raise RuntimeError(f"TensorRT left output {name!r} with an unresolved shape {shape}")
                outputs[name] = np.empty(shape, dtype=self._dtypes[name])
            for name, arr in (*host.items(), *outputs.items()):
                ptr = self._ensure(name, arr.nbytes)
                if not ctx.set_tensor_address(name, ptr):
                    raise RuntimeError(f"TensorRT refused the device address of {name!r}")
            h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            for name, arr in host.items():
                self._cuda(cudart.cudaMemcpyAsync(self._buffers[name].ptr, arr.ctypes.data, arr.nbytes, h2d,
                                                  self._stream), f"cudaMemcpyAsync(host->device, {name})")
            if not ctx.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            for name, arr in outputs.items():
                self._cuda(cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name].ptr, arr.nbytes, d2h,
                                                  self._stream), f"cudaMemcpyAsync(device->host, {name})")
            # The host arrays above must stay alive until here: the copies are asynchronous.
            self._cuda(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return outputs["action_mean"], outputs["action_log_std"]

    # ------------------------------------------------------------------------------------------------ lifecycle
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(precision=self.engine_meta.precision, tensorrt_version=self.engine_meta.tensorrt_version,
                 min_batch=self.min_batch, max_batch=self.max_batch)
        return d

    def close(self) -> None:
        """Free the device buffers and the stream, and drop the engine. Idempotent."""
        if getattr(self, "_closed", True):
            return
        with self._lock:  # never free buffers under a running inference
            self._release()

    def _release(self) -> None:
        self._closed = True
        cudart, errors = self._cudart, []
        for name, buf in self._buffers.items():
            if buf.ptr:
                try:
                    self._cuda(cudart.cudaFree(buf.ptr), f"cudaFree({name})")
                except CudaError as exc:  # keep freeing the rest; report once at the end
                    errors.append(str(exc))
                buf.ptr, buf.nbytes = 0, 0
        if self._stream is not None:
            try:
                self._cuda(cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            except CudaError as exc:
                errors.append(str(exc))
            self._stream = None
        # The context must go before the engine, and the engine before the runtime.
        self._context = None
        self._engine = None
        self._runtime = None
        if errors:
            raise CudaError("; ".join(errors))

    def __enter__(self) -> "TensorRTPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser (e.g. at interpreter shutdown)
            pass


__all__ = ["CudaError", "ENGINE_FILE", "ENGINE_SIDECAR", "EXPECTED_DTYPES", "EngineMeta", "PRECISIONS",
           "TensorRTPolicy", "TensorRTUnavailable", "engine_compatible", "require_tensorrt", "tensorrt_status"]
