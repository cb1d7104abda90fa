"""The policy registry and push validation (torch-free runtime side): only a whole, checked, sane policy is accepted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from srpo.runtime.policy import ONNX_FILE, SIDECAR, ExportMeta, ModelIntegrityError, sha256_file
from srpo.runtime.registry import MANIFEST, PolicyRegistry, resolve_policy_path
from srpo.runtime.validation import CandidateRejected, ValidationConfig, validate_candidate
from srpo.spec import TABLETOP_SPEC
from tests.export.conftest import recorded

SPEC = TABLETOP_SPEC.with_image_size(32, 32)


def _observations(store, n=4):
    return [recorded(store, 1, seed=s) for s in range(n)]


def test_publish_is_whole_immutable_and_verified(exported, checkpoint, tmp_path):
    registry = PolicyRegistry(tmp_path / "registry")
    entry = registry.publish(exported, checkpoint, parent="sft:start@0", metrics={"success": 0.4})
    meta = ExportMeta.read(exported)
    assert entry.version == meta.version and entry.parent == "sft:start@0" and entry.metrics == {"success": 0.4}
    assert {ONNX_FILE, SIDECAR, "checkpoint/model.safetensors", "checkpoint/config.json"} <= set(entry.files)
    assert entry.verify() is entry and registry.get(meta.version).path == entry.path
    assert [e.version for e in registry.entries()] == [meta.version]
    assert resolve_policy_path(meta.version, registry.root) == entry.path
    assert not list(registry.root.glob(".staging-*"))
    with pytest.raises(FileExistsError, match="immutable"):
        registry.publish(exported)
    with pytest.raises(KeyError, match="no version"):
        registry.get("rl:never@000")


def test_a_tampered_version_fails_verification_by_name(exported, tmp_path):
    entry = PolicyRegistry(tmp_path / "r").publish(exported)
    sidecar = json.loads((entry.path / SIDECAR).read_text())
    sidecar["norm_stats"]["action_std"] = [1.0] * 7
    (entry.path / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(ModelIntegrityError, match="policy.json does not match its checksum"):
        entry.verify()


def test_validation_accepts_a_good_candidate_with_its_report(exported, episode_store, tmp_path):
    entry = PolicyRegistry(tmp_path / "r").publish(exported)
    policy, report = validate_candidate(entry.path, SPEC, _observations(episode_store),
                                        ValidationConfig(latency_budget_s=1.0), backend="onnxruntime")
    assert policy.version == entry.version and report.max_latency_s < 1.0
    assert any("manifest" in c for c in report.checks) and any("spec" in c for c in report.checks)


def _copy(exported, tmp_path, name):
    out = tmp_path / name
    shutil.copytree(exported, out)
    return out


def _rewrite_graph(path, change):
    """Edit the ONNX graph's weights and re-record its checksum, as a consistent but broken export would be."""
    model = onnx.load(str(path / ONNX_FILE))
    change(model)
    onnx.save(model, str(path / ONNX_FILE))
    meta = json.loads((path / SIDECAR).read_text())
    meta["onnx_sha256"] = sha256_file(path / ONNX_FILE)
    (path / SIDECAR).write_text(json.dumps(meta))


def test_validation_rejects_corrupted_mismatched_nan_wild_and_slow_candidates(exported, episode_store, tmp_path):
    obs = _observations(episode_store)
    loose = ValidationConfig(latency_budget_s=1.0)

    corrupted = _copy(exported, tmp_path, "corrupted")
    raw = bytearray((corrupted / ONNX_FILE).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (corrupted / ONNX_FILE).write_bytes(bytes(raw))
    with pytest.raises(CandidateRejected, match="^integrity: .*checksum"):
        validate_candidate(corrupted, SPEC, obs, loose, "onnxruntime")

    with pytest.raises(CandidateRejected, match="^spec: cameras"):
        validate_candidate(exported, TABLETOP_SPEC, obs, loose, "onnxruntime")  # the robot runs 64x64 cameras

    def poison(model):
        init = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
        arr = numpy_helper.to_array(init).copy()
        arr.flat[:] = np.nan
        init.CopyFrom(numpy_helper.from_array(arr, init.name))

    nan = _copy(exported, tmp_path, "nan")
    _rewrite_graph(nan, poison)
    with pytest.raises(CandidateRejected, match="^smoke: .*non-finite"):
        validate_candidate(nan, SPEC, obs, loose, "onnxruntime")

    wild = _copy(exported, tmp_path, "wild")
    meta = json.loads((wild / SIDECAR).read_text())
    meta["norm_stats"]["action_mean"] = [5.0] * 7  # every action 5x beyond the bounds
    (wild / SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(CandidateRejected, match="^smoke: actions reach"):
        validate_candidate(wild, SPEC, obs, loose, "onnxruntime")

    with pytest.raises(CandidateRejected, match="^latency: "):
        validate_candidate(exported, SPEC, obs, ValidationConfig(latency_budget_s=1e-7), "onnxruntime")
    with pytest.raises(CandidateRejected, match="no recorded observation"):
        validate_candidate(exported, SPEC, [], loose, "onnxruntime")
    assert (exported / MANIFEST).exists() is False  # a bare export validates too (no manifest to check)


def test_registry_command_line_publishes_lists_and_flags_damage(exported, checkpoint, tmp_path):
    import subprocess
    import sys

    def srpo(*args):
        return subprocess.run([sys.executable, "-m", "srpo_cli", *args], capture_output=True, text=True, timeout=300)

    r = srpo("registry", "publish", str(exported), "--registry", str(tmp_path / "reg"), "--checkpoint",
             str(checkpoint), "--parent", "sft:start@0", "--metrics", '{"success": 0.42}')
    assert r.returncode == 0 and "published" in r.stdout, r.stderr
    again = srpo("registry", "publish", str(exported), "--registry", str(tmp_path / "reg"))
    assert again.returncode == 1 and "immutable" in again.stderr
    listed = srpo("registry", "list", str(tmp_path / "reg"))
    assert listed.returncode == 0 and "success=0.42" in listed.stdout and "yes" in listed.stdout
    version_dir = next(p for p in (tmp_path / "reg").iterdir() if p.is_dir())
    (version_dir / "checkpoint" / "config.json").write_text("{}")
    damaged = srpo("registry", "list", str(tmp_path / "reg"))
    assert damaged.returncode == 1 and "NO:" in damaged.stdout
