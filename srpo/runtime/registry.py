"""The policy registry: every version the trainer produces, immutable, with what justified it. Torch-free.

A registry is a folder of version folders. Each holds what the runtime needs to run it (the ONNX export: ``model.onnx``
and ``policy.json``; a TensorRT engine where one was built), optionally the source checkpoint (``checkpoint/``, for
the torch reference and further training), and ``manifest.json``::

    {"format": "srpo-registry/1", "version": "rl:loop@3f9a0c12e4b1", "parent": "sft:demo@...",
     "created_unix": ..., "files": {"model.onnx": "<sha256>", ...}, "metrics": {...}}

A version is published atomically: it is assembled in a hidden staging folder, every file fsynced, and renamed into
place, so a reader sees a whole version or none. Versions are never overwritten. ``RegistryEntry.verify`` checks every
file against the manifest before a robot may load it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srpo.runtime.policy import ONNX_FILE, SIDECAR, ExportMeta, ModelIntegrityError, sha256_file

REGISTRY_FORMAT = "srpo-registry/1"
MANIFEST = "manifest.json"


def version_slug(version: str) -> str:
    """A folder name for a version string (``rl:loop@3f9a`` -> ``rl_loop@3f9a``)."""
    slug = re.sub(r"[^A-Za-z0-9@._-]+", "_", version).strip("._")
    if not slug:
        raise ValueError(f"version {version!r} has no usable characters")
    return slug


@dataclass
class RegistryEntry:
    """One published version."""

    path: Path
    version: str
    parent: str | None
    created_unix: float
    files: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RegistryEntry":
        path = Path(path)
        try:
            m = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelIntegrityError(f"{path}: unreadable registry manifest: {exc}") from exc
        if m.get("format") != REGISTRY_FORMAT:
            raise ModelIntegrityError(f"{path}: manifest format {m.get('format')!r}, expected {REGISTRY_FORMAT!r}")
        return cls(path, m["version"], m.get("parent"), float(m["created_unix"]), dict(m["files"]),
                   dict(m.get("metrics", {})))

    def verify(self) -> "RegistryEntry":
        """Every file present with its recorded SHA-256, and the export's sidecar naming this version."""
        for rel, digest in sorted(self.files.items()):
            f = self.path / rel
            if not f.is_file():
                raise ModelIntegrityError(f"{self.path}: {rel} is missing")
            if sha256_file(f) != digest:
                raise ModelIntegrityError(f"{self.path}: {rel} does not match its checksum in the manifest")
        meta = ExportMeta.read(self.path)
        if meta.version != self.version:
            raise ModelIntegrityError(f"{self.path}: the export is version {meta.version!r}, the manifest says "
                                      f"{self.version!r}")
        return self


class PolicyRegistry:
    """Publish, list and find versions under ``root``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def publish(self, export_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None,
                parent: str | None = None, metrics: dict[str, Any] | None = None,
                engine_dir: str | os.PathLike | None = None) -> RegistryEntry:
        """Copy an ONNX export (and optionally its checkpoint and a TensorRT engine) into a new version folder."""
        export_dir = Path(export_dir)
        meta = ExportMeta.read(export_dir)  # raises on a missing or foreign sidecar
        meta.check_file(export_dir / ONNX_FILE, meta.onnx_sha256)
        target = self.root / version_slug(meta.version)
        if target.exists():
            raise FileExistsError(f"{target}: version {meta.version} is already published (versions are immutable)")
        staging = self.root / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            files = {}
            for name in (ONNX_FILE, SIDECAR):
                shutil.copy2(export_dir / name, staging / name)
            if engine_dir is not None:
                for f in Path(engine_dir).iterdir():
                    if f.suffix in (".plan", ".json") and f.name != SIDECAR:
                        shutil.copy2(f, staging / f.name)
            if checkpoint_dir is not None:
                shutil.copytree(checkpoint_dir, staging / "checkpoint")
            for f in sorted(p for p in staging.rglob("*") if p.is_file()):
                files[str(f.relative_to(staging))] = sha256_file(f)
                _fsync(f)
            manifest = {"format": REGISTRY_FORMAT, "version": meta.version, "parent": parent,
                        "created_unix": time.time(), "files": files, "metrics": metrics or {},
                        "spec": meta.spec}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            _fsync(staging / MANIFEST)
            os.rename(staging, target)  # atomic on one filesystem: a reader sees all of the version or none
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync(self.root)
        return RegistryEntry.read(target)

    def entries(self) -> list[RegistryEntry]:
        """Every published version, oldest first (staging folders and damaged manifests are skipped)."""
        out = []
        for d in sorted(self.root.glob("*")) if self.root.is_dir() else []:
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file():
                try:
                    out.append(RegistryEntry.read(d))
                except ModelIntegrityError:
                    continue
        return sorted(out, key=lambda e: e.created_unix)

    def get(self, version: str) -> RegistryEntry:
        path = self.root / version_slug(version)
        if not (path / MANIFEST).is_file():
            raise KeyError(f"no version {version!r} in {self.root} (has {[e.version for e in self.entries()]})")
        return RegistryEntry.read(path)


def resolve_policy_path(name: str, registry: str | os.PathLike | None) -> Path:
    """A path to a policy folder, or a version name looked up in ``registry``."""
    path = Path(name)
    if path.exists() or registry is None:
        return path
    return PolicyRegistry(registry).get(name).path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["MANIFEST", "REGISTRY_FORMAT", "PolicyRegistry", "RegistryEntry", "resolve_policy_path", "version_slug"]
