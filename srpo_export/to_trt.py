"""ONNX -> TensorRT: build an engine from an exported policy graph, and check it against ONNX Runtime.

    python export/to_trt.py exports/sft/model.onnx --out exports/sft [--fp16] [--max-batch 16] [--check]

The output directory becomes a self-contained engine directory that ``TensorRTPolicy`` loads: ``model.plan`` (the
serialised engine), ``engine.json`` (``EngineMeta``: TensorRT version, GPU, precision, batch profile, the SHA-256 of
the graph it came from and of the plan) and a copy of ``policy.json`` (and of ``model.onnx`` when the output is
another directory, so that the ONNX Runtime backend can run from the same directory where TensorRT is unavailable).

An engine is specific to one TensorRT version and one GPU model, and its dynamic batch is bounded by one
optimisation profile ([--min-batch, --max-batch], tuned for --opt-batch). An existing engine in the output
directory is reused when it was built from the same graph, with this TensorRT, for this GPU, at the same precision
and batch profile (``--force`` rebuilds anyway). Files are written under temporary names and renamed, and
``engine.json`` is written last: a directory with an ``engine.json`` always holds a complete engine.

``--check`` runs the engine and ONNX Runtime (CPU) on the same deterministic inputs at batches 1, 4 and 16 (those
inside the profile) and fails when they differ by more than the precision's tolerance (``FP32_*`` / ``FP16_*``).

Without tensorrt, cuda-python or an NVIDIA GPU the command prints one line saying what is missing and exits with 2;
nothing here imports torch, and tensorrt only when an engine is built.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from srpo.runtime import tensorrt_backend as trt_backend
from srpo.runtime.policy import (INPUT_NAMES, ONNX_FILE, OUTPUT_NAMES, SIDECAR, ExportMeta, ModelIntegrityError,
                                 expected_io, sha256_file)
from srpo.runtime.processing import ByteTokenizer
from srpo.runtime.tensorrt_backend import (ENGINE_FILE, ENGINE_SIDECAR, CudaError, EngineMeta, TensorRTUnavailable,
                                           require_tensorrt)

# Engine-vs-ONNX Runtime tolerances, in normalised action units (action std = 1), elementwise
# |trt - ort| <= atol + rtol * |ort|.
# FP32: TensorRT runs other kernels than ONNX Runtime's CPU ones (fused layers, other summation orders), which moves
# results by ~1e-6..1e-4; 1e-3 leaves room for that and nothing else. (An FP32 build clears TensorRT's default TF32
# flag: TF32 matmuls round their inputs to a 10-bit mantissa and would need the FP16 tolerance.)
FP32_ATOL = 1e-3
FP32_RTOL = 1e-3
# FP16: half precision has a 10-bit mantissa (relative step ~1e-3 per operation), and the error grows through the
# image encoders, attention softmax and layer norms; 1e-3 would fail correct engines. 5e-2 of an action std is still
# far below what changes the robot's behaviour (the policy's own std is ~0.1-1), while a broken engine (wrong
# weights, overflow to inf, a mis-bound input) is off by O(1) and is caught.
FP16_ATOL = 5e-2
FP16_RTOL = 5e-2

DEFAULT_CHECK_BATCHES = (1, 4, 16)
# Real instructions for the check inputs: token ids and masks as the robot produces them (not random ids).
CHECK_INSTRUCTIONS = ("pick up the red cube", "put the red cube in the tray", "press the orange button",
                      "open the top drawer", "push the blue block to the left")

Log = Callable[[str], None]


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build the engine; the message says where."""


class EngineCheckError(ValueError):
    """The engine's outputs differ from ONNX Runtime's beyond the tolerance."""


class CheckUnavailable(RuntimeError):
    """The check's reference (onnxruntime) is not installed."""


# ------------------------------------------------------------------------------------------------- validation
def validate_profile(min_batch: int, opt_batch: int, max_batch: int) -> None:
    """Raise ValueError unless 1 <= min <= opt <= max (integers)."""
    for name, value in (("min batch", min_batch), ("opt batch", opt_batch), ("max batch", max_batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not min_batch <= opt_batch <= max_batch:
        raise ValueError(f"the batch profile needs min <= opt <= max, got min {min_batch}, opt {opt_batch}, "
                         f"max {max_batch}")


def _check_batches(batches: Iterable[int], meta: EngineMeta) -> list[int]:
    out = sorted({int(b) for b in batches})
    if not out:
        raise ValueError("no batch sizes to check")
    outside = [b for b in out if not meta.min_batch <= b <= meta.max_batch]
    if outside:
        raise ValueError(f"check batches {outside} are outside the engine's profile [{meta.min_batch}, "
                         f"{meta.max_batch}]")
    return out


def _default_check_batches(min_batch: int, opt_batch: int, max_batch: int) -> list[int]:
    """1, 4 and 16 where the profile allows them, plus the profile's own min, opt and max."""
    return sorted({min_batch, opt_batch, max_batch} | {b for b in DEFAULT_CHECK_BATCHES if min_batch <= b <= max_batch})


# ---------------------------------------------------------------------------------------------------- building
def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` via a temp file + rename, unless ``dst`` already has the same bytes."""
    if dst.is_file() and sha256_file(dst) == sha256_file(src):
        return
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _populate(out: Path, onnx_path: Path) -> None:
    """Make ``out`` self-contained: the sidecar (the engine is useless without its spec and statistics) and the graph
    (the ONNX Runtime fallback runs from the same directory)."""
    src_dir = onnx_path.parent
    if out.resolve() == src_dir.resolve():
        return
    _copy_atomic(src_dir / SIDECAR, out / SIDECAR)
    _copy_atomic(onnx_path, out / ONNX_FILE)


def _why_rebuild(out: Path, wanted: dict) -> str | None:
    """None if the engine in ``out`` was built exactly as ``wanted`` and is intact, else why it must be rebuilt."""
    if not (out / ENGINE_SIDECAR).is_file() or not (out / ENGINE_FILE).is_file():
        return "no engine yet"
    try:
        have = EngineMeta.read(out)
    except ModelIntegrityError as exc:
        return str(exc)
    for key, value in wanted.items():
        if getattr(have, key) != value:
            return f"{key} differs ({getattr(have, key)!r} in the existing engine, {value!r} wanted)"
    if sha256_file(out / ENGINE_FILE) != have.engine_sha256:
        return f"{out / ENGINE_FILE} does not match its {ENGINE_SIDECAR} checksum (damaged)"
    return None


def _parser_error_text(error) -> str:
    """One line per ONNX parser error: the description and, where the binding says, the node."""
    try:
        text = str(error.desc())
        node = getattr(error, "node_name", None)
        op = getattr(error, "node_operator", None)
        where = [w for w in ((node() if callable(node) else None), (op() if callable(op) else None)) if w]
        if where:
            text += f" (node {' / '.join(str(w) for w in where)})"
        return text.replace("\n", " ")
    except Exception:  # noqa: BLE001 - error objects differ across TensorRT versions; str() always works
        return str(error).replace("\n", " ")


def _check_network(network, meta: ExportMeta, onnx_path: Path, min_batch: int, max_batch: int) -> None:
    """The parsed graph must have the exported policy's inputs and outputs, with the shapes its spec implies."""
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    outputs = sorted(network.get_output(i).name for i in range(network.num_outputs))
    if sorted(inputs) != sorted(INPUT_NAMES) or outputs != sorted(OUTPUT_NAMES):
        raise ModelIntegrityError(f"{onnx_path}: graph has inputs {sorted(inputs)} and outputs {outputs}, expected "
                                  f"{sorted(INPUT_NAMES)} and {sorted(OUTPUT_NAMES)}")
    for name, want in expected_io(meta).items():
        shape = tuple(int(s) for s in inputs[name].shape)
        if len(shape) != len(want) or any(s >= 0 and s != w for s, w in zip(shape[1:], want[1:])):
            raise ModelIntegrityError(f"{onnx_path}: input {name!r} has shape {shape}, the spec in {SIDECAR} needs "
                                      f"{want} (None = any batch)")
        if shape[0] >= 0 and not shape[0] == min_batch == max_batch:
            raise ModelIntegrityError(f"{onnx_path}: input {name!r} has a fixed batch of {shape[0]}; re-export with a "
                                      "dynamic batch, or build with --min-batch = --max-batch = that batch")


def _build(onnx_path: Path, meta: ExportMeta, fp16: bool, min_batch: int, opt_batch: int, max_batch: int,
           workspace_gb: float) -> tuple[bytes, float]:
    """Parse and build; returns the serialised engine and the build time in seconds."""
    trt = trt_backend._import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated and ignored); older ones need it.
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and int(str(trt.__version__).split(".")[0]) < 10:
        flags = 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # The path lets the parser find external weight files next to the graph (large exports).
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [_parser_error_text(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed with {len(errors)} error(s): "
                               + " | ".join(f"[{i + 1}] {e}" for i, e in enumerate(errors)))
    _check_network(network, meta, onnx_path, min_batch, max_batch)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16:
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise EngineBuildError("--fp16 asked, but this GPU has no fast native FP16; build FP32 (without --fp16)")
        config.set_flag(trt.BuilderFlag.FP16)
    elif getattr(trt.BuilderFlag, "TF32", None) is not None:
        # TF32 is on by default on Ampere and later; "fp32" must mean FP32 (see FP32_ATOL).
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, shape in expected_io(meta).items():
        rest = tuple(int(s) for s in shape[1:])
        profile.set_shape(name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"TensorRT rejected the batch profile {min_batch}/{opt_batch}/{max_batch}")

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above); a larger "
                               "--workspace-gb or a smaller --max-batch may help")
    return bytes(memoryview(serialized)), seconds


def build_engine(onnx_path: str | os.PathLike, out_dir: str | os.PathLike, fp16: bool = False, min_batch: int = 1,
                 opt_batch: int = 1, max_batch: int = 16, workspace_gb: float = 2.0, check: bool = False,
                 force: bool = False, log: Log | None = None) -> Path:
    """Build (or reuse) the TensorRT engine of the exported graph ``onnx_path`` into ``out_dir``; returns the path
    of ``model.plan``. ``check`` compares it with ONNX Runtime afterwards (``check_engine``); a failed check removes
    ``engine.json`` so that the engine is neither loaded nor reused. ``log`` receives progress lines."""
    log = log or (lambda message: None)
    validate_profile(min_batch, opt_batch, max_batch)
    if not workspace_gb > 0:
        raise ValueError(f"workspace must be > 0 GiB, got {workspace_gb}")
    onnx_path, out = Path(onnx_path), Path(out_dir)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file")
    # The graph must be the one its sidecar describes (and the sidecar must exist: it travels with the engine).
    meta = ExportMeta.read(onnx_path.parent)
    meta.check_file(onnx_path, meta.onnx_sha256)
    require_tensorrt()
    version, gpu, capability = trt_backend._running_platform()
    precision = "fp16" if fp16 else "fp32"
    wanted = dict(tensorrt_version=version, gpu_name=gpu, compute_capability=capability, precision=precision,
                  onnx_sha256=meta.onnx_sha256, min_batch=int(min_batch), opt_batch=int(opt_batch),
                  max_batch=int(max_batch))
    out.mkdir(parents=True, exist_ok=True)
    plan = out / ENGINE_FILE

    reason = "--force" if force else _why_rebuild(out, wanted)
    if reason is None:
        log(f"reusing {plan}: built from the same graph with TensorRT {version} for {gpu}, {precision}, batch "
            f"{min_batch}..{max_batch} (--force rebuilds)")
        _populate(out, onnx_path)
    else:
        log(f"building {plan} ({reason}): TensorRT {version}, {gpu}, {precision}, batch {min_batch}..{max_batch} "
            f"(opt {opt_batch})")
        data, seconds = _build(onnx_path, meta, fp16, min_batch, opt_batch, max_batch, workspace_gb)
        (out / ENGINE_SIDECAR).unlink(missing_ok=True)  # from here until the end the directory is incomplete
        tmp = out / f".{ENGINE_FILE}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, plan)
        _populate(out, onnx_path)
        EngineMeta(engine_sha256=sha256_file(plan), build_seconds=round(seconds, 3), **wanted).write(out)

    if check:
        batches = _default_check_batches(min_batch, opt_batch, max_batch)
        try:
            diffs = check_engine(out, onnx_path, batches=batches, fp16=fp16)
        except EngineCheckError:
            (out / ENGINE_SIDECAR).unlink(missing_ok=True)
            raise
        atol, rtol = _tolerances(fp16)
        worst = max(max(d.values()) for d in diffs.values())
        log(f"check passed: max |tensorrt - onnxruntime| {worst:.2e} over batches {', '.join(map(str, diffs))} "
            f"(tolerance atol {atol:g} + rtol {rtol:g}, {precision})")
    return plan


# ---------------------------------------------------------------------------------------------------- checking
def _tolerances(fp16: bool) -> tuple[float, float]:
    return (FP16_ATOL, FP16_RTOL) if fp16 else (FP32_ATOL, FP32_RTOL)


def synthetic_inputs(meta: ExportMeta, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic, valid graph inputs: images uniform in [-1, 1] (the preprocessed range), proprio standard
    normal (normalised units), and real instructions tokenised by the runtime's byte tokenizer."""
    io = expected_io(meta)
    rng = np.random.default_rng([seed, batch])
    images = rng.uniform(-1.0, 1.0, (batch, *io["images"][1:])).astype(np.float32)
    proprio = rng.standard_normal((batch, *io["proprio"][1:])).astype(np.float32)
    texts = [CHECK_INSTRUCTIONS[i % len(CHECK_INSTRUCTIONS)] for i in range(batch)]
    ids, mask = ByteTokenizer(meta.text_len).encode(texts, pad_to=meta.text_len)
    return {"images": images, "proprio": proprio, "text_ids": ids.astype(np.int64), "text_mask": mask.astype(bool)}


def check_engine(engine_dir: str | os.PathLike, onnx_path: str | os.PathLike,
                 batches: Iterable[int] = DEFAULT_CHECK_BATCHES, fp16: bool | None = None,
                 seed: int = 0) -> dict[int, dict[str, float]]:
    """Run the engine in ``engine_dir`` and ONNX Runtime (CPU) on ``onnx_path`` with the same inputs at each batch;
    raise ``EngineCheckError`` (naming the output, batch and max abs difference) when an output differs beyond the
    tolerance of the precision (``fp16`` None: the engine's own). Returns {batch: {output: max abs difference}}."""
    engine_dir, onnx_path = Path(engine_dir), Path(onnx_path)
    emeta = EngineMeta.read(engine_dir)
    if fp16 is None:
        fp16 = emeta.precision == "fp16"
    atol, rtol = _tolerances(bool(fp16))
    batches = _check_batches(batches, emeta)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path}: no such ONNX file")
    if sha256_file(onnx_path) != emeta.onnx_sha256:
        raise ModelIntegrityError(f"{onnx_path}: not the graph the engine in {engine_dir} was built from (sha256 "
                                  "differs); compare an engine with its own model.onnx")
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise CheckUnavailable("onnxruntime is not installed: pip install onnxruntime (the reference --check "
                               "compares the engine with)") from exc
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = ExportMeta.read(engine_dir)
    policy = trt_backend.TensorRTPolicy(engine_dir)
    precision = "fp16" if fp16 else "fp32"
    results: dict[int, dict[str, float]] = {}
    try:
        for batch in batches:
            inputs = synthetic_inputs(meta, batch, seed)
            got = dict(zip(OUTPUT_NAMES, policy._run(inputs)))
            ref = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), inputs)))
            results[batch] = {}
            for name in OUTPUT_NAMES:
                g, r = np.asarray(got[name], np.float64), np.asarray(ref[name], np.float64)
                if g.shape != r.shape:
                    raise EngineCheckError(f"batch {batch}: {name} has shape {g.shape} from TensorRT but {r.shape} "
                                           "from ONNX Runtime")
                if not np.all(np.isfinite(g)):
                    raise EngineCheckError(f"batch {batch}: {name} from TensorRT has non-finite values "
                                           f"({precision} overflow?)")
                diff = np.abs(g - r)
                worst = float(diff.max()) if diff.size else 0.0
                results[batch][name] = worst
                if np.any(diff > atol + rtol * np.abs(r)):
                    raise EngineCheckError(f"batch {batch}: {name} differs from ONNX Runtime by up to {worst:.3g} "
                                           f"(max abs difference), beyond the {precision} tolerance atol {atol:g} + "
                                           f"rtol {rtol:g} * |reference|")
    finally:
        policy.close()
    return results


# --------------------------------------------------------------------------------------------------------- CLI
class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + error, like every other failure here
        raise _ArgumentError(message)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="to_trt", description="Build a TensorRT engine from an exported policy graph.")
    parser.add_argument("onnx", help="exported graph (model.onnx, with its policy.json beside it)")
    parser.add_argument("--out", required=True, help="engine directory (model.plan + engine.json + policy.json)")
    parser.add_argument("--fp16", action="store_true",
                        help="allow FP16 kernels (faster; checked with a looser tolerance)")
    parser.add_argument("--min-batch", type=int, default=1, help="smallest batch the engine accepts (default 1)")
    parser.add_argument("--opt-batch", type=int, default=None,
                        help="batch the kernels are tuned for (default: the min batch)")
    parser.add_argument("--max-batch", type=int, default=16, help="largest batch the engine accepts (default 16)")
    parser.add_argument("--workspace-gb", type=float, default=2.0, help="builder scratch memory limit (default 2)")
    parser.add_argument("--check", action="store_true", help="compare the engine with ONNX Runtime afterwards")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")

    def fail(message: object, code: int) -> int:
        print(f"to_trt: {_one_line(message)}", file=sys.stderr)
        return code

    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        return fail(f"{exc} (see --help)", 2)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    if args.opt_batch is None:  # the robot's usual case: one observation at a time, i.e. the smallest batch
        args.opt_batch = args.min_batch
    try:
        validate_profile(args.min_batch, args.opt_batch, args.max_batch)
        if not args.workspace_gb > 0:
            raise ValueError(f"--workspace-gb must be > 0, got {args.workspace_gb}")
    except ValueError as exc:
        return fail(exc, 2)
    try:
        require_tensorrt()  # before touching files: without TensorRT nothing else matters
    except TensorRTUnavailable as exc:
        return fail(exc, 2)

    try:
        plan = build_engine(args.onnx, args.out, fp16=args.fp16, min_batch=args.min_batch, opt_batch=args.opt_batch,
                            max_batch=args.max_batch, workspace_gb=args.workspace_gb, check=args.check,
                            force=args.force, log=lambda message: print(f"to_trt: {message}", flush=True))
    except EngineCheckError as exc:
        return fail(f"check failed: {exc}; {ENGINE_SIDECAR} removed, the engine will not be used", 1)
    except (TensorRTUnavailable, CheckUnavailable, FileNotFoundError, ModelIntegrityError) as exc:
        return fail(exc, 2)
    except ValueError as exc:
        return fail(exc, 2)
    except (EngineBuildError, CudaError, RuntimeError, OSError) as exc:
        return fail(f"{type(exc).__name__}: {exc}" if not isinstance(exc, EngineBuildError) else exc, 1)
    meta = EngineMeta.read(plan.parent)
    print(f"to_trt: engine {plan} ({meta.precision}, batch {meta.min_batch}..{meta.max_batch} opt {meta.opt_batch}, "
          f"built in {meta.build_seconds:.1f} s) with TensorRT {meta.tensorrt_version} on {meta.gpu_name} "
          f"(compute capability {meta.compute_capability})")
    return 0


__all__ = ["CHECK_INSTRUCTIONS", "CheckUnavailable", "DEFAULT_CHECK_BATCHES", "EngineBuildError", "EngineCheckError",
           "FP16_ATOL", "FP16_RTOL", "FP32_ATOL", "FP32_RTOL", "build_engine", "check_engine", "main",
           "synthetic_inputs", "validate_profile"]
