"""TensorRT engines: the builder's CLI, the engine sidecar, compatibility and integrity checks, and (on a machine with
tensorrt, cuda-python and an NVIDIA GPU) real builds from a tiny ONNX graph and from a real export, run by
``TensorRTPolicy`` and checked against ONNX Runtime.

Everything above the GPU section runs anywhere; the GPU section skips with the reason ``tensorrt_status()`` gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from srpo.runtime import tensorrt_backend
from srpo.runtime.observation import Observation
from srpo.runtime.policy import ONNX_FILE, SIDECAR, ExportMeta, ModelIntegrityError, sha256_file
from srpo.runtime.processing import BOS, BYTE_OFFSET, EOS, NormStats
from srpo.runtime.tensorrt_backend import (ENGINE_FILE, ENGINE_SIDECAR, EngineMeta, TensorRTPolicy,
                                           TensorRTUnavailable, engine_compatible, tensorrt_status)
from srpo.spec import TABLETOP_SPEC

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # srpo_export is importable from a source checkout
    sys.path.insert(0, str(ROOT))

from srpo_export import to_trt  # noqa: E402

TRT_OK, TRT_REASON = tensorrt_status()
needs_gpu = pytest.mark.skipif(not TRT_OK, reason=TRT_REASON)
without_trt = pytest.mark.skipif(TRT_OK, reason="TensorRT is available here: the 'missing TensorRT' paths cannot run")

K, A, TEXT_LEN, SIZE = 4, 7, 40, 8  # the tiny graph: chunk 4, 7-d actions, 40 tokens, two 8x8 cameras


def _run(args: list[str], prelude: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-c", prelude] if prelude is not None else [sys.executable, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _meta(onnx_sha256: str = "0" * 64) -> ExportMeta:
    spec = TABLETOP_SPEC.with_image_size(SIZE, SIZE)
    stats = NormStats(np.zeros(A, np.float32), np.ones(A, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32))
    return ExportMeta(spec=spec.to_dict(), norm_stats=stats.to_dict(), chunk_size=K, text_len=TEXT_LEN,
                      version="test:tiny", onnx_sha256=onnx_sha256)


def _engine_meta(**overrides) -> EngineMeta:
    d = dict(tensorrt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp32",
             onnx_sha256="a" * 64, engine_sha256="b" * 64, min_batch=1, opt_batch=1, max_batch=16, build_seconds=12.5)
    d.update(overrides)
    return EngineMeta(**d)


def _fake_engine_dir(path: Path) -> Path:
    """An engine directory whose files are consistent with each other (the plan's bytes are not a real engine)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ONNX_FILE).write_bytes(b"not really onnx")
    _meta(sha256_file(path / ONNX_FILE)).write(path)
    (path / ENGINE_FILE).write_bytes(b"not really a plan")
    _engine_meta(onnx_sha256=sha256_file(path / ONNX_FILE), engine_sha256=sha256_file(path / ENGINE_FILE)).write(path)
    return path


# --------------------------------------------------------------------------------------- the CLI without TensorRT
@without_trt
def test_cli_without_tensorrt_prints_one_line_and_exits_2(tmp_path):
    proc = _run(["export/to_trt.py", str(tmp_path / "some.onnx"), "--out", str(tmp_path / "d")])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0] == f"to_trt: {TRT_REASON}"
    if "not installed" in TRT_REASON:  # tensorrt (this machine) or cuda-python missing: say how to get it
        assert "pip install" in lines[0]
    else:  # tensorrt present but no GPU: say that
        assert "GPU" in lines[0]
    assert not (tmp_path / "d").exists()  # nothing written


@without_trt
def test_tensorrt_status_says_why_not():
    ok, reason = tensorrt_status()
    assert ok is False
    assert reason.strip() and "\n" not in reason
    assert any(word in reason for word in ("tensorrt", "cuda-python", "GPU"))


def test_cli_rejects_a_bad_batch_profile_in_one_line(tmp_path):
    proc = _run(["export/to_trt.py", str(tmp_path / "model.onnx"), "--out", str(tmp_path / "d"),
                 "--min-batch", "8", "--max-batch", "4"])
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("to_trt: ") and "min" in proc.stderr and "max" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--min-batch", "4", "--opt-batch", "2", "--max-batch", "8"], ("min", "opt")),
    (["--opt-batch", "32", "--max-batch", "16"], ("opt", "max")),
    (["--min-batch", "0"], ("positive",)),
    (["--workspace-gb", "0"], ("workspace",)),
    (["--max-batch", "many"], ("invalid int",)),
    (["--no-such-flag"], ("unrecognized",)),
])
def test_main_rejects_bad_arguments_with_code_2(tmp_path, capsys, args, words):
    assert to_trt.main([str(tmp_path / "model.onnx"), "--out", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("to_trt: ")
    assert all(w in err for w in words), err


def test_main_without_out_is_one_line(capsys):
    assert to_trt.main(["model.onnx"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--out" in err


def test_main_help_exits_0(capsys):
    assert to_trt.main(["--help"]) == 0
    assert "--max-batch" in capsys.readouterr().out


def test_validate_profile():
    to_trt.validate_profile(1, 1, 1)
    to_trt.validate_profile(1, 4, 16)
    for bad in [(2, 1, 4), (1, 8, 4), (0, 1, 1), (1.5, 2, 4), (True, 1, 1)]:
        with pytest.raises(ValueError):
            to_trt.validate_profile(*bad)


def test_modules_import_without_torch_or_tensorrt():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import srpo.runtime.tensorrt_backend, srpo_export.to_trt\n"
            "bad = [m for m in ('torch', 'tensorrt', 'onnxruntime', 'onnx') if sys.modules.get(m) is not None]\n"
            "assert not bad, bad\n"
            "print('ok')")
    proc = _run([], prelude=code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------------------------------------------- EngineMeta
def test_engine_meta_round_trip(tmp_path):
    meta = _engine_meta(precision="fp16", min_batch=2, opt_batch=4, max_batch=8)
    path = meta.write(tmp_path)
    assert path == tmp_path / ENGINE_SIDECAR
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed
    assert EngineMeta.read(tmp_path) == meta
    assert EngineMeta.read(path) == meta  # the sidecar's own path works too
    assert json.loads(path.read_text())["gpu_name"] == "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize("content, words", [
    ("{not json", "malformed"),
    ("[1, 2]", "JSON object"),
    (json.dumps({k: v for k, v in asdict(_engine_meta()).items() if k != "engine_sha256"}), "engine_sha256"),
    (json.dumps({**asdict(_engine_meta()), "precision": "int8"}), "precision"),
    (json.dumps({**asdict(_engine_meta()), "min_batch": 8, "max_batch": 4}), "min <= opt <= max"),
    (json.dumps({**asdict(_engine_meta()), "max_batch": "16"}), "max_batch"),
    (json.dumps({**asdict(_engine_meta()), "gpu_name": ""}), "gpu_name"),
])
def test_malformed_engine_sidecar_is_refused(tmp_path, content, words):
    (tmp_path / ENGINE_SIDECAR).write_text(content)
    with pytest.raises(ModelIntegrityError, match="malformed engine sidecar") as err:
        EngineMeta.read(tmp_path)
    assert words in str(err.value)


def test_missing_engine_sidecar_says_how_to_build(tmp_path):
    with pytest.raises(ModelIntegrityError, match="to_trt.py"):
        EngineMeta.read(tmp_path)


# -------------------------------------------------------------------------------------------- compatibility
@pytest.fixture
def platform(monkeypatch):
    """Pretend to be a machine with TensorRT 10.3.0 on an H100."""
    current = {"value": ("10.3.0", "NVIDIA H100 80GB HBM3", "9.0")}
    monkeypatch.setattr(tensorrt_backend, "_running_platform", lambda device=0: current["value"])
    return current


def test_engine_compatible_on_the_same_platform(platform):
    assert engine_compatible(_engine_meta()) is None


def test_engine_from_another_tensorrt_version_is_incompatible(platform):
    reason = engine_compatible(_engine_meta(tensorrt_version="10.0.1"))
    assert reason is not None and "TensorRT 10.0.1" in reason and "TensorRT 10.3.0" in reason


def test_engine_for_another_gpu_is_incompatible(platform):
    reason = engine_compatible(_engine_meta(gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9"))
    assert reason is not None and "NVIDIA GeForce RTX 4090" in reason and "NVIDIA H100 80GB HBM3" in reason
    assert "GPU" in reason


def test_engine_compatible_without_tensorrt_gives_the_reason(monkeypatch):
    def missing(device=0):
        raise TensorRTUnavailable("tensorrt is not installed: pip install tensorrt-cu12")

    monkeypatch.setattr(tensorrt_backend, "_running_platform", missing)
    assert "pip install tensorrt" in engine_compatible(_engine_meta())


def test_reuse_decision(tmp_path):
    out = _fake_engine_dir(tmp_path / "eng")
    have = asdict(EngineMeta.read(out))
    wanted = {k: have[k] for k in ("tensorrt_version", "gpu_name", "compute_capability", "precision", "onnx_sha256",
                                   "min_batch", "opt_batch", "max_batch")}
    assert to_trt._why_rebuild(out, wanted) is None
    assert "precision" in to_trt._why_rebuild(out, {**wanted, "precision": "fp16"})
    assert "max_batch" in to_trt._why_rebuild(out, {**wanted, "max_batch": 32})
    assert "tensorrt_version" in to_trt._why_rebuild(out, {**wanted, "tensorrt_version": "10.4.0"})
    (out / ENGINE_FILE).write_bytes(b"damaged")
    assert "damaged" in to_trt._why_rebuild(out, wanted)
    assert to_trt._why_rebuild(tmp_path / "empty", wanted) == "no engine yet"


# ------------------------------------------------------------------------------------ integrity, before any GPU
def test_policy_refuses_a_directory_without_an_engine(tmp_path):
    d = _fake_engine_dir(tmp_path / "eng")
    (d / ENGINE_SIDECAR).unlink()
    with pytest.raises(ModelIntegrityError, match="to_trt.py"):
        TensorRTPolicy(d)


def test_policy_refuses_a_damaged_plan(tmp_path):
    d = _fake_engine_dir(tmp_path / "eng")
    (d / ENGINE_FILE).write_bytes(b"not really a plaN")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        TensorRTPolicy(d)


def test_policy_refuses_an_engine_built_from_another_graph(tmp_path):
    d = _fake_engine_dir(tmp_path / "eng")
    _meta("c" * 64).write(d)  # the sidecar now describes another graph than the one the engine came from
    with pytest.raises(ModelIntegrityError, match="another ONNX graph"):
        TensorRTPolicy(d)


@without_trt
def test_policy_without_tensorrt_says_what_is_missing(tmp_path):
    with pytest.raises(TensorRTUnavailable) as err:
        TensorRTPolicy(_fake_engine_dir(tmp_path / "eng"))
    assert str(err.value) == TRT_REASON


@without_trt
def test_build_engine_checks_the_graph_then_needs_tensorrt(tmp_path):
    d = _fake_engine_dir(tmp_path / "export")
    with pytest.raises(TensorRTUnavailable):
        to_trt.build_engine(d / ONNX_FILE, tmp_path / "out")
    (d / ONNX_FILE).write_bytes(b"swapped graph")
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        to_trt.build_engine(d / ONNX_FILE, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        to_trt.build_engine(tmp_path / "nowhere.onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_synthetic_inputs_are_valid_and_deterministic():
    meta = _meta()
    a, b = to_trt.synthetic_inputs(meta, 5), to_trt.synthetic_inputs(meta, 5)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert a["images"].shape == (5, 2, 3, SIZE, SIZE) and a["images"].dtype == np.float32
    assert a["images"].min() >= -1 and a["images"].max() <= 1
    assert a["proprio"].shape == (5, 8) and a["proprio"].dtype == np.float32
    assert a["text_ids"].shape == (5, TEXT_LEN) and a["text_ids"].dtype == np.int64
    assert a["text_mask"].dtype == np.bool_ and np.array_equal(a["text_mask"], a["text_ids"] != 0)
    first = a["text_ids"][0][a["text_mask"][0]]
    assert first[0] == BOS and first[-1] == EOS
    assert bytes(int(t) - BYTE_OFFSET for t in first[1:-1]).decode() == to_trt.CHECK_INSTRUCTIONS[0]
    assert not np.array_equal(to_trt.synthetic_inputs(meta, 5, seed=1)["images"], a["images"])


def test_tolerances_are_explicit():
    assert (to_trt.FP32_ATOL, to_trt.FP32_RTOL) == (1e-3, 1e-3)
    assert (to_trt.FP16_ATOL, to_trt.FP16_RTOL) == (5e-2, 5e-2)


# ------------------------------------------------------------------------------------- GPU: real engines
def _tiny_onnx(directory: Path) -> Path:
    """A small graph with the exported policy's exact interface (names, dtypes, dynamic batch) that uses every
    input: real matmuls (so FP16 has something to round), a cast of the token ids and mask, a tanh and a reshape."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n_img, ka = 2 * 3 * SIZE * SIZE, K * A
    weights = {
        "w_img": rng.normal(0, 1 / np.sqrt(n_img), (n_img, ka)).astype(np.float32),
        "w_prop": rng.normal(0, 0.3, (8, ka)).astype(np.float32),
        "w_text": rng.normal(0, 1e-3, (TEXT_LEN, ka)).astype(np.float32),
        "chunk_shape": np.array([-1, K, A], np.int64),
        "log_std": np.linspace(-2, 0, ka, dtype=np.float32).reshape(K, A),
    }
    nodes = [
        helper.make_node("Flatten", ["images"], ["img_flat"], axis=1),
        helper.make_node("MatMul", ["img_flat", "w_img"], ["img_feat"]),
        helper.make_node("MatMul", ["proprio", "w_prop"], ["prop_feat"]),
        helper.make_node("Cast", ["text_ids"], ["ids_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["text_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids_f", "mask_f"], ["tokens"]),
        helper.make_node("MatMul", ["tokens", "w_text"], ["text_feat"]),
        helper.make_node("Add", ["img_feat", "prop_feat"], ["h0"]),
        helper.make_node("Add", ["h0", "text_feat"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h2"]),
        helper.make_node("Reshape", ["h2", "chunk_shape"], ["action_mean"]),
        helper.make_node("Identity", ["log_std"], ["action_log_std"]),
    ]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 2, 3, SIZE, SIZE]),
              helper.make_tensor_value_info("proprio", TensorProto.FLOAT, ["batch", 8]),
              helper.make_tensor_value_info("text_ids", TensorProto.INT64, ["batch", TEXT_LEN]),
              helper.make_tensor_value_info("text_mask", TensorProto.BOOL, ["batch", TEXT_LEN])]
    outputs = [helper.make_tensor_value_info("action_mean", TensorProto.FLOAT, ["batch", K, A]),
               helper.make_tensor_value_info("action_log_std", TensorProto.FLOAT, [K, A])]
    graph = helper.make_graph(nodes, "tiny_policy", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime / TensorRT parser of the last years
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ONNX_FILE
    onnx.save(model, str(path))
    _meta(sha256_file(path)).write(directory)
    return path


def _obs(batch: int, seed: int = 0) -> Observation:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8) for c in ("agentview", "wrist")}
    proprio = rng.normal(0, 1, (batch, 8)).astype(np.float32)
    return Observation(images, proprio, [to_trt.CHECK_INSTRUCTIONS[i % 3] for i in range(batch)])


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """The tiny graph exported to one directory and built (FP32, batch 1..8, checked) into another."""
    if not TRT_OK:
        pytest.skip(TRT_REASON)
    pytest.importorskip("onnxruntime")
    onnx_path = _tiny_onnx(tmp_path_factory.mktemp("tiny_export"))
    out = tmp_path_factory.mktemp("tiny_engine")
    lines: list[str] = []
    plan = to_trt.build_engine(onnx_path, out, min_batch=1, opt_batch=2, max_batch=8, check=True, log=lines.append)
    return onnx_path, plan, lines


@needs_gpu
def test_build_writes_a_self_contained_engine_directory(tiny_engine):
    onnx_path, plan, lines = tiny_engine
    out = plan.parent
    assert plan == out / ENGINE_FILE and plan.stat().st_size > 0
    meta = EngineMeta.read(out)
    version, gpu, capability = tensorrt_backend._running_platform()
    assert (meta.tensorrt_version, meta.gpu_name, meta.compute_capability) == (version, gpu, capability)
    assert (meta.precision, meta.min_batch, meta.opt_batch, meta.max_batch) == ("fp32", 1, 2, 8)
    assert meta.engine_sha256 == sha256_file(plan) and meta.onnx_sha256 == sha256_file(onnx_path)
    assert sha256_file(out / ONNX_FILE) == sha256_file(onnx_path)  # the ONNX Runtime fallback runs from here too
    assert ExportMeta.read(out) == ExportMeta.read(onnx_path.parent)
    assert any(line.startswith("check passed") for line in lines)


@needs_gpu
def test_tensorrt_policy_matches_onnx_runtime_and_handles_growing_batches(tiny_engine):
    from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy

    _, plan, _ = tiny_engine
    reference = OnnxRuntimePolicy(plan.parent, providers=["CPUExecutionProvider"])
    with TensorRTPolicy(plan.parent) as policy:
        assert policy.backend == "tensorrt" and policy.device.startswith("cuda:0 (")
        for batch in (1, 8, 3, 8, 1):  # grow, shrink, grow again: buffers are reused and re-bound
            obs = _obs(batch, seed=batch)
            mean, log_std = policy.predict_distribution(obs)
            ref_mean, ref_log_std = reference.predict_distribution(obs)
            assert mean.shape == (batch, K, A) and log_std.shape == (K, A)
            np.testing.assert_allclose(mean, ref_mean, atol=to_trt.FP32_ATOL, rtol=to_trt.FP32_RTOL)
            np.testing.assert_allclose(log_std, ref_log_std, atol=to_trt.FP32_ATOL, rtol=to_trt.FP32_RTOL)
            chunk = policy.predict_action_chunk(obs)
            assert chunk.shape == (batch, K, A) and np.all(np.abs(chunk) <= 1)
        with pytest.raises(ValueError, match=r"outside the engine's optimisation profile \[1, 8\]"):
            policy.predict_distribution(_obs(9))
    policy.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        policy.predict_distribution(_obs(1))


@needs_gpu
def test_check_engine_reports_differences_per_batch(tiny_engine):
    onnx_path, plan, _ = tiny_engine
    diffs = to_trt.check_engine(plan.parent, onnx_path, batches=(1, 4, 8))
    assert sorted(diffs) == [1, 4, 8]
    for d in diffs.values():
        assert set(d) == {"action_mean", "action_log_std"}
        assert all(0 <= v <= to_trt.FP32_ATOL * 2 for v in d.values())
    with pytest.raises(ValueError, match="outside the engine's profile"):
        to_trt.check_engine(plan.parent, onnx_path, batches=(16,))


@needs_gpu
def test_fp16_engine_passes_its_check(tiny_engine, tmp_path):
    onnx_path, _, _ = tiny_engine
    plan = to_trt.build_engine(onnx_path, tmp_path / "fp16", fp16=True, max_batch=16, check=True)
    assert EngineMeta.read(plan.parent).precision == "fp16"
    diffs = to_trt.check_engine(plan.parent, onnx_path, batches=(1, 4, 16), fp16=True)
    assert sorted(diffs) == [1, 4, 16]
    assert max(max(d.values()) for d in diffs.values()) <= to_trt.FP16_ATOL * 2


@needs_gpu
def test_matching_engine_is_reused_and_force_rebuilds(tiny_engine):
    onnx_path, plan, _ = tiny_engine
    before, mtime = sha256_file(plan), plan.stat().st_mtime_ns
    lines: list[str] = []
    assert to_trt.build_engine(onnx_path, plan.parent, opt_batch=2, max_batch=8, log=lines.append) == plan
    assert lines[0].startswith("reusing") and plan.stat().st_mtime_ns == mtime and sha256_file(plan) == before
    lines.clear()
    to_trt.build_engine(onnx_path, plan.parent, opt_batch=2, max_batch=8, force=True, log=lines.append)
    assert lines[0].startswith("building") and "--force" in lines[0]
    assert EngineMeta.read(plan.parent).engine_sha256 == sha256_file(plan)


@needs_gpu
def test_damaged_or_foreign_engines_are_refused(tiny_engine, tmp_path, monkeypatch):
    import shutil

    _, plan, _ = tiny_engine
    copy = tmp_path / "copy"
    shutil.copytree(plan.parent, copy)
    version, gpu, capability = tensorrt_backend._running_platform()
    monkeypatch.setattr(tensorrt_backend, "_running_platform", lambda device=0: ("9.9.9", gpu, capability))
    with pytest.raises(ModelIntegrityError, match="TensorRT 9.9.9.*to_trt.py"):
        TensorRTPolicy(copy)
    monkeypatch.undo()
    data = bytearray((copy / ENGINE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / ENGINE_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        TensorRTPolicy(copy)


@needs_gpu
def test_cli_builds_checks_and_summarises(tiny_engine, tmp_path, capsys):
    onnx_path, _, _ = tiny_engine
    assert to_trt.main([str(onnx_path), "--out", str(tmp_path / "cli"), "--max-batch", "4", "--check"]) == 0
    out = capsys.readouterr().out
    assert "check passed" in out and "TensorRT" in out and "fp32" in out
    assert (tmp_path / "cli" / ENGINE_FILE).is_file() and (tmp_path / "cli" / SIDECAR).is_file()


@needs_gpu
def test_real_export_builds_and_matches_onnx_runtime(exported, tmp_path):
    """The real exported policy (CNN image encoders + transformer text encoder): FP32 within its tolerance."""
    pytest.importorskip("onnxruntime")
    from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy
    from tests.export.conftest import random_obs

    plan = to_trt.build_engine(exported / ONNX_FILE, tmp_path / "engine", max_batch=16, check=True)
    reference = OnnxRuntimePolicy(exported, providers=["CPUExecutionProvider"])
    with TensorRTPolicy(plan.parent) as policy:
        obs = random_obs(4)
        mean, log_std = policy.predict_distribution(obs)
        ref_mean, ref_log_std = reference.predict_distribution(obs)
        np.testing.assert_allclose(mean, ref_mean, atol=to_trt.FP32_ATOL, rtol=to_trt.FP32_RTOL)
        np.testing.assert_allclose(log_std, ref_log_std, atol=to_trt.FP32_ATOL, rtol=to_trt.FP32_RTOL)
