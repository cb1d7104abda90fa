"""Checkpoint -> ONNX: the policy's inference graph, verified against PyTorch, with a sidecar that makes it usable alone.

    srpo export onnx runs/sft/final --out exports/sft                 # or: python export/to_onnx.py CKPT --out DIR
    srpo export onnx runs/sft/final --out exports/sft --data data/demos   # verify on recorded episodes

The graph: ``images`` (B, n_cams, 3, H, W) float32 in [-1, 1], ``proprio`` (B, P) normalised, ``text_ids`` (B, L)
int64 and ``text_mask`` (B, L) bool in; ``action_mean`` (B, K, A) and ``action_log_std`` (K, A), in normalised action
units, out. The batch is dynamic. Pre- and post-processing stay outside the graph, in the numpy ``Preprocessor`` that
every backend shares, so the statistics are defined once (they travel in the sidecar and the ONNX metadata).

The instruction goes in as fixed-length byte-token ids (L = the policy's ``max_text_len``), inside the graph, rather
than as an embedding computed once per instruction by a second graph. Why: one graph is one artefact to checksum,
validate, swap in and build into one TensorRT engine, and the robot needs no second runtime session; the built-in
text encoder is one small transformer layer over L tokens, a few percent of a step's cost next to the two image
encoders (``benchmarks/policy_latency.py`` measures the whole graph). The price: L is fixed at export time.

Verification: on recorded observations (``--data`` episodes, else observations from the built-in simulator), the
ONNX Runtime output through the numpy processing must match the torch policy's own path (its torch processor) within
``atol`` (1e-4) at batches 1, 4 and 16, or the export fails and nothing is written. Files are written under temporary
names and renamed; ``policy.json`` comes last, so a directory with a sidecar is always a complete export.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from srpo.runtime.observation import Observation
from srpo.runtime.policy import EXPORT_FORMAT, INPUT_NAMES, ONNX_FILE, OUTPUT_NAMES, SIDECAR, ExportMeta, sha256_file

OPSET = 17
ATOL = 1e-4
BATCHES = (1, 4, 16)
MAX_EPISODES = 64


class ExportError(RuntimeError):
    """An export that cannot be produced or failed its verification; nothing was written."""


def checkpoint_sha256(checkpoint: str | os.PathLike) -> str:
    """One digest of a checkpoint directory: its config and its weights, so either changing changes it."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        path = Path(checkpoint) / name
        if not path.is_file():
            raise ExportError(f"{checkpoint}: not a policy checkpoint (missing {name})")
        h.update(name.encode())
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def recorded_observations(spec, data: str | os.PathLike | None, count: int = 16, seed: int = 0) -> Observation:
    """``count`` real observations: frames of recorded episodes under ``data``, or, without data, of the built-in
    simulator's held-out initial states after a few random actions (the images the policy sees when it runs)."""
    cams = [c.name for c in spec.observation.cameras]
    rng = np.random.default_rng(seed)
    images: dict[str, list[np.ndarray]] = {c: [] for c in cams}
    proprio, instructions = [], []
    if data is not None:
        from srpo.episodes.store import EpisodeStore

        for n_read, ep in enumerate(EpisodeStore(data).iter_episodes()):
            steps = ep.image_steps
            for step in rng.choice(np.asarray(steps), size=min(4, len(steps)), replace=False):
                frame = ep.frame_index(int(step))
                for c in cams:
                    if c not in ep.images:
                        raise ExportError(f"{data}: episode {ep.meta.task} has no camera {c!r}; the policy needs {cams}")
                    images[c].append(ep.images[c][frame])
                proprio.append(ep.proprio[int(step)])
                instructions.append(ep.meta.instruction)
            if n_read + 1 >= MAX_EPISODES:
                break
        if not proprio:
            raise ExportError(f"{data}: no recorded episodes to verify the export on")
    else:
        from srpo.sim.tabletop.env import TabletopEnv
        from srpo.sim.tabletop.tasks import TASKS

        cam = spec.observation.cameras[0]
        env = TabletopEnv(image_size=cam.height)
        try:
            tasks = sorted(TASKS)
            for i in range(count):
                obs, info = env.reset(options={"task": tasks[i % len(tasks)], "split": "heldout", "init_state_id": i})
                for _ in range(i % 4):
                    obs, *_ = env.step(rng.uniform(-1, 1, spec.action.dim).astype(np.float32))
                for c in cams:
                    images[c].append(obs[c])
                proprio.append(obs["proprio"])
                instructions.append(info["instruction"])
        finally:
            env.close()
    n = len(proprio)
    # a random subset across episodes (tasks, instructions), repeated only when fewer than ``count`` were recorded
    rows = rng.permutation(n)[:count] if n >= count else np.arange(count) % n
    return Observation({c: np.stack(v)[rows] for c, v in images.items()}, np.stack(proprio).astype(np.float32)[rows],
                       [instructions[i] for i in rows])


def _torch_reference(policy, obs: Observation) -> tuple[np.ndarray, np.ndarray]:
    import torch

    with torch.no_grad():
        mean, log_std = policy.model(*policy.encode(obs))
    return mean.numpy(), log_std.numpy()


def verify(session, policy, processor, obs: Observation, text_len: int, batches=BATCHES, atol: float = ATOL) -> dict:
    """Max |ONNX Runtime - PyTorch| of both outputs per batch size; raises ``ExportError`` above ``atol``."""
    result = {}
    for b in batches:
        rows = [i % obs.batch_size for i in range(b)]
        sub = obs.select(rows)
        ref_mean, ref_log_std = _torch_reference(policy, sub)
        got_mean, got_log_std = session.run(list(OUTPUT_NAMES), processor.inputs(sub, text_len))
        if got_mean.shape != ref_mean.shape:
            raise ExportError(f"batch {b}: ONNX action_mean has shape {got_mean.shape}, PyTorch {ref_mean.shape}")
        diff = {"action_mean": float(np.max(np.abs(got_mean - ref_mean))),
                "action_log_std": float(np.max(np.abs(got_log_std - ref_log_std)))}
        result[str(b)] = diff
        worst = max(diff, key=diff.get)
        if not diff[worst] <= atol:  # also catches NaN
            raise ExportError(f"verification failed at batch {b}: max |onnx - torch| of {worst} is {diff[worst]:.3g} "
                              f"> {atol:g}")
    return result


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, data: str | os.PathLike | None = None,
                atol: float = ATOL, observations: Observation | None = None) -> Path:
    """Export ``checkpoint`` to ``out``/model.onnx + ``out``/policy.json, verified; returns ``out``."""
    import onnx
    import onnxruntime as ort
    import torch

    from srpo_trainer.policies import load_policy
    from srpo_trainer.policies.text import ByteTokenizer as TorchByteTokenizer

    t0 = time.perf_counter()
    policy = load_policy(checkpoint)
    policy.eval()
    if not isinstance(policy.processor.tokenizer, TorchByteTokenizer):
        raise ExportError(f"{checkpoint}: only policies with the built-in byte tokenizer can be exported (the runtime "
                          "tokenises without transformers); this one uses a Hugging Face tokenizer")
    text_len = policy.processor.tokenizer.max_len
    from srpo.runtime.processing import ByteTokenizer, Preprocessor

    processor = Preprocessor(policy.spec, policy.processor.stats, ByteTokenizer(text_len))
    obs = observations if observations is not None else recorded_observations(policy.spec, data)
    example = processor.inputs(obs.select([0, 1 % obs.batch_size]), text_len)  # batch 2: keeps the batch dynamic

    class Graph(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, images, proprio, text_ids, text_mask):
            return self.model(images, proprio, text_ids, text_mask)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{ONNX_FILE}.tmp"
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        # the fused inference kernel of nn.TransformerEncoderLayer has no ONNX symbolic; the plain path is the same maths
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            torch.onnx.export(Graph(policy.model), tuple(torch.as_tensor(example[k]) for k in INPUT_NAMES), str(tmp),
                              input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), opset_version=OPSET,
                              dynamic_axes={**{k: {0: "batch"} for k in INPUT_NAMES}, "action_mean": {0: "batch"}},
                              dynamo=False)
        model = onnx.load(str(tmp))
        source_sha = checkpoint_sha256(checkpoint)
        props = {"srpo_format": EXPORT_FORMAT, "srpo_version": policy.version, "srpo_spec": json.dumps(policy.spec.to_dict()),
                 "srpo_norm_stats": json.dumps(policy.processor.stats.to_dict()), "srpo_chunk_size": str(policy.chunk_size),
                 "srpo_text_len": str(text_len), "srpo_source_sha256": source_sha}
        del model.metadata_props[:]
        for k, v in props.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = k, v
        model.producer_name = "srpo"
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        diffs = verify(session, policy, processor, obs, text_len, atol=atol)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"exporting {checkpoint} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    (out / SIDECAR).unlink(missing_ok=True)  # a half-replaced export must not look complete
    os.replace(tmp, out / ONNX_FILE)
    ExportMeta(spec=policy.spec.to_dict(), norm_stats=policy.processor.stats.to_dict(), chunk_size=policy.chunk_size,
               text_len=text_len, version=policy.version, onnx_sha256=sha256_file(out / ONNX_FILE),
               source_checkpoint=str(Path(checkpoint).resolve()), source_sha256=source_sha, opset=OPSET,
               verification={"atol": atol, "max_abs_diff": diffs, "observations": obs.batch_size,
                             "source": str(data) if data else "simulator", "torch": torch.__version__,
                             "onnxruntime": ort.__version__, "seconds": round(time.perf_counter() - t0, 2)}
               ).write(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="srpo export onnx", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="policy checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("--out", required=True, help="export directory (model.onnx + policy.json)")
    parser.add_argument("--data", help="episode directory to verify on (default: observations from the simulator)")
    parser.add_argument("--atol", type=float, default=ATOL, help="max |onnx - torch| allowed (normalised units)")
    args = parser.parse_args(argv)
    from srpo_trainer.policies import CheckpointError

    try:
        out = export_onnx(args.checkpoint, args.out, args.data, args.atol)
    except (ExportError, CheckpointError) as exc:
        print(f"export onnx: {exc}", file=sys.stderr)
        return 1
    meta = ExportMeta.read(out)
    worst = max(max(d.values()) for d in meta.verification["max_abs_diff"].values())
    print(f"exported {args.checkpoint} -> {out / ONNX_FILE} (policy {meta.version}, chunk {meta.chunk_size}); "
          f"max |onnx - torch| {worst:.2e} over batches {', '.join(meta.verification['max_abs_diff'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
