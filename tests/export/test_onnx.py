"""ONNX export and the ONNX Runtime backend: parity with PyTorch on recorded observations, the sidecar and metadata,
and refusal of damaged or mismatched models."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from srpo.runtime import ExportMeta, ModelIntegrityError, choose_backend, load_inference_policy
from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy
from srpo.runtime.policy import ONNX_FILE, SIDECAR, sha256_file
from tests.export.conftest import recorded

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("batch", [1, 4, 16])
def test_onnx_runtime_matches_torch_on_recorded_observations(exported, checkpoint, episode_store, batch):
    from srpo_trainer.policies import load_policy

    torch_policy = load_policy(checkpoint)
    ort_policy = OnnxRuntimePolicy(exported)
    obs = recorded(episode_store, batch, seed=batch)
    assert len(set(obs.instructions)) == 2 or batch == 1  # both tasks' instructions (different lengths) are covered
    t_mean, t_log_std = torch_policy.predict_distribution(obs)
    o_mean, o_log_std = ort_policy.predict_distribution(obs)
    assert o_mean.shape == (batch, 8, 7) and o_log_std.shape == (8, 7)
    assert np.max(np.abs(o_mean - t_mean)) <= 1e-4
    assert np.max(np.abs(o_log_std - t_log_std)) <= 1e-5
    np.testing.assert_allclose(ort_policy.predict_action_chunk(obs), torch_policy.predict_action_chunk(obs), atol=1e-4)
    assert (ort_policy.backend, ort_policy.device) == ("onnxruntime", "cpu")


def test_sidecar_and_onnx_metadata_round_trip(exported, checkpoint):
    from srpo_export.to_onnx import checkpoint_sha256
    from srpo_trainer.policies import load_policy

    meta = ExportMeta.read(exported)
    policy = load_policy(checkpoint)
    assert meta.version == policy.version and policy.version.startswith("test:ckpt@")
    assert meta.spec == policy.spec.to_dict() and meta.chunk_size == policy.chunk_size
    np.testing.assert_allclose(meta.stats().action_std, policy.processor.stats.action_std)
    assert meta.source_sha256 == checkpoint_sha256(checkpoint)
    assert meta.onnx_sha256 == sha256_file(exported / ONNX_FILE)
    assert set(meta.verification["max_abs_diff"]) == {"1", "4", "16"}
    assert max(max(d.values()) for d in meta.verification["max_abs_diff"].values()) <= 1e-4
    props = {p.key: p.value for p in onnx.load(str(exported / ONNX_FILE)).metadata_props}
    assert props["srpo_version"] == meta.version and props["srpo_source_sha256"] == meta.source_sha256
    assert json.loads(props["srpo_spec"]) == meta.spec and json.loads(props["srpo_norm_stats"]) == meta.norm_stats
    assert int(props["srpo_text_len"]) == meta.text_len


def test_batch_dimension_is_dynamic_in_the_graph(exported):
    model = onnx.load(str(exported / ONNX_FILE))
    for value in [*model.graph.input, model.graph.output[0]]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch", value.name


def _copy(exported, tmp_path):
    return shutil.copytree(exported, tmp_path / "copy")


def test_truncated_onnx_file_is_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    data = (d / ONNX_FILE).read_bytes()
    (d / ONNX_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        OnnxRuntimePolicy(d)
    # even with a sidecar that vouches for the truncated bytes, ONNX Runtime's refusal becomes a clear error
    meta = ExportMeta.read(d)
    meta.onnx_sha256 = sha256_file(d / ONNX_FILE)
    meta.write(d)
    with pytest.raises(ModelIntegrityError, match="ONNX Runtime cannot load it"):
        OnnxRuntimePolicy(d)


def test_checksum_mismatch_with_a_valid_but_different_graph_is_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    model = onnx.load(str(d / ONNX_FILE))
    model.doc_string = "edited"  # still a valid graph, but not the one the sidecar describes
    onnx.save(model, str(d / ONNX_FILE))
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        OnnxRuntimePolicy(d)


def test_wrong_input_spec_is_refused(exported, tmp_path):
    d = _copy(exported, tmp_path)
    meta = ExportMeta.read(d)
    spec = dict(meta.spec)
    spec["cameras"] = [{**c, "height": 64, "width": 64} for c in spec["cameras"]]  # the graph was built for 32x32
    meta.spec = spec
    meta.write(d)
    with pytest.raises(ModelIntegrityError, match="input 'images'"):
        OnnxRuntimePolicy(d)


def test_missing_or_foreign_sidecar_is_a_clear_error(exported, tmp_path):
    d = _copy(exported, tmp_path)
    (d / SIDECAR).write_text(json.dumps({"format": "something-else/1"}))
    with pytest.raises(ModelIntegrityError, match="format"):
        OnnxRuntimePolicy(d)
    (d / SIDECAR).unlink()
    with pytest.raises(ModelIntegrityError, match="not an exported policy"):
        OnnxRuntimePolicy(d)


def test_bad_observation_is_refused_before_inference(exported):
    from tests.export.conftest import random_obs

    policy = OnnxRuntimePolicy(exported)
    obs = random_obs(2)
    obs.proprio[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        policy.predict_action_chunk(obs)


def test_auto_backend_picks_onnxruntime_here_and_says_why_not_tensorrt(exported, checkpoint):
    choice = choose_backend(exported, "auto")
    assert choice.backend == "onnxruntime"
    assert any(r.startswith("tensorrt:") for r in choice.reasons)
    # a checkpoint folder has no ONNX graph: auto falls through to torch, which reports itself
    policy = load_inference_policy(checkpoint, "auto")
    assert policy.backend == "torch" and str(policy.device) == "cpu"
    # an export folder can also run on torch through the source checkpoint recorded in its sidecar
    assert load_inference_policy(exported, "torch").version == ExportMeta.read(exported).version


def test_export_that_fails_verification_writes_nothing(checkpoint, episode_store, tmp_path):
    from srpo_export.to_onnx import ExportError, export_onnx

    with pytest.raises(ExportError, match="verification failed"):
        export_onnx(checkpoint, tmp_path / "out", data=episode_store.root, atol=0.0 - 1.0)
    assert not (tmp_path / "out" / ONNX_FILE).exists() and not (tmp_path / "out" / SIDECAR).exists()


def test_eval_on_onnxruntime_gives_the_same_success_as_torch(exported, tmp_path):
    """``srpo eval --backend onnxruntime`` and ``--backend torch`` on the same seeds: the same episodes."""
    def run(backend):
        out = tmp_path / backend
        proc = subprocess.run([sys.executable, "-m", "srpo_cli", "eval", "--policy", str(exported), "--backend", backend,
                               "--episodes-per-task", "2", "--tasks", "reach_red_cube,press_button", "--workers", "2",
                               "--out", str(out), "gifs=0"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"[{backend} on cpu]" in proc.stdout
        return json.loads((out / "eval.json").read_text())

    ort, ref = run("onnxruntime"), run("torch")
    assert ort["backend"] == "onnxruntime" and ref["backend"] == "torch"
    # actions agree to ~1e-6; contact dynamics can shift an episode's end by a step, not its outcome
    assert [(e["task"], e["init_state_id"], e["success"]) for e in ort["episodes_detail"]] == \
        [(e["task"], e["init_state_id"], e["success"]) for e in ref["episodes_detail"]]
    assert ort["success_rate"] == ref["success_rate"]
    np.testing.assert_allclose([e["progress"] for e in ort["episodes_detail"]],
                               [e["progress"] for e in ref["episodes_detail"]], atol=0.05)


def test_runtime_runs_an_onnx_policy_with_torch_unimportable(exported):
    """What a robot without torch runs: load the export, act on an observation, and never import torch."""
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now raises ImportError
import numpy as np
from srpo.runtime import load_inference_policy
from srpo.runtime.observation import Observation
policy = load_inference_policy({str(exported)!r}, "auto")
rng = np.random.default_rng(0)
obs = Observation({{c: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8) for c in ("agentview", "wrist")}},
                  np.zeros((2, 8), np.float32), ["press the orange button"] * 2)
chunk = policy.predict_action_chunk(obs)
assert chunk.shape == (2, 8, 7) and np.all(np.isfinite(chunk)) and np.all(np.abs(chunk) <= 1)
print(policy.backend, policy.device, sorted(m for m in sys.modules if m.startswith(("srpo_trainer", "srpo_cli"))))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "onnxruntime cpu []"


def test_core_never_imports_the_layers_above_it():
    """The dependency direction: nothing under srpo/ imports the trainer, the exporter, the command line or ROS."""
    import ast
    from pathlib import Path

    import srpo

    above = ("srpo_trainer", "srpo_export", "srpo_cli", "srpo_ros", "rclpy")
    offenders = []
    for path in Path(srpo.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in above]
    assert offenders == []
