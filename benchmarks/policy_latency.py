"""Policy inference latency per backend, and whether the action chunker keeps a 20 Hz control loop fed.

    python benchmarks/policy_latency.py --out benchmarks/results        # JSON + PNG, ~3 min on 2 cores

The built-in VLA at its default size (``TinyVLAConfig()``, both cameras at 64x64; random weights: latency does not
depend on them), exported once with ``srpo_export.to_onnx`` (verified against PyTorch), then, each backend in its own
process so that its peak memory is its own:
- ``torch_eager``: the PyTorch reference (``TinyVLAPolicy.predict_action_chunk``, processing included);
- ``torch_compile``: the same network through ``torch.compile`` (the first call's compile time is reported apart);
- ``onnxruntime_cpu``: ``OnnxRuntimePolicy`` (numpy processing + ONNX Runtime, CPU provider);
- ``tensorrt_fp32`` / ``tensorrt_fp16``: ``TensorRTPolicy`` on an engine built by ``export/to_trt.py``, only where
  tensorrt and a GPU exist (elsewhere the row says why it is missing).
Each at 1 and 2 intra-op threads: batch-1 latency p50/p99 over ``--iters`` calls after ``--warmup``, batch-16
throughput (observations per second), and the process's peak RSS. Speed is quoted as a ratio to torch eager at the
same thread count, measured in the same run.

The control-loop check runs the real ``ActionChunker`` (async prefetch) at 20 Hz for ``--ticks`` real ticks with the
ONNX Runtime policy (chunk 8, 8 actions executed per chunk): ticks starved (no action) must be 0.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, pyplot, write_json  # noqa: E402

BACKENDS = ("torch_eager", "torch_compile", "onnxruntime_cpu", "tensorrt_fp32", "tensorrt_fp16")


def _observations(batch: int, seed: int = 0):
    from srpo.runtime.observation import Observation

    rng = np.random.default_rng(seed)
    texts = ["put the red cube in the tray", "press the orange button", "stack the red cube on the blue cube"]
    return Observation({c: rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8) for c in ("agentview", "wrist")},
                       rng.normal(0, 0.1, (batch, 8)).astype(np.float32), [texts[i % 3] for i in range(batch)])


def make_checkpoint(directory: Path) -> Path:
    import torch

    from srpo.runtime.processing import NormStats
    from srpo.spec import TABLETOP_SPEC
    from srpo_trainer.policies.tiny_vla import TinyVLAConfig, TinyVLAPolicy

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = NormStats(rng.normal(0, 0.1, 7).astype(np.float32), rng.uniform(0.2, 1, 7).astype(np.float32),
                      rng.normal(0, 0.1, 8).astype(np.float32), rng.uniform(0.2, 1, 8).astype(np.float32))
    policy = TinyVLAPolicy(TinyVLAConfig(), TABLETOP_SPEC, stats, version="bench:random")
    return policy.save_pretrained(directory / "ckpt")


def _load(backend: str, checkpoint: Path, export: Path, threads: int):
    """A callable obs -> chunk for ``backend``, and the compile seconds (torch.compile) or 0."""
    if backend.startswith("torch"):
        import torch

        from srpo_trainer.policies import load_policy

        torch.set_num_threads(threads)
        policy = load_policy(checkpoint).eval()
        if backend == "torch_compile":
            policy.model = torch.compile(policy.model)
            t0 = time.perf_counter()
            policy.predict_action_chunk(_observations(1))
            policy.predict_action_chunk(_observations(16))
            return policy.predict_action_chunk, time.perf_counter() - t0
        return policy.predict_action_chunk, 0.0
    if backend == "onnxruntime_cpu":
        from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy

        return OnnxRuntimePolicy(export, providers=["CPUExecutionProvider"], threads=threads).predict_action_chunk, 0.0
    from srpo.runtime.tensorrt_backend import TensorRTPolicy

    return TensorRTPolicy(export / backend.split("_")[1]).predict_action_chunk, 0.0


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process image, unlike ``ru_maxrss``, which a spawned
    child inherits from its parent across fork + exec (and would then count the parent's torch)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(backend: str, checkpoint: str, export: str, threads: int, warmup: int, iters: int, queue) -> None:
    try:
        infer, compile_s = _load(backend, Path(checkpoint), Path(export), threads)
        one, sixteen = _observations(1), _observations(16, seed=1)
        for _ in range(warmup):
            infer(one)
        times = []
        for i in range(iters):
            t0 = time.perf_counter()
            infer(one)
            times.append(time.perf_counter() - t0)
        infer(sixteen)
        t0 = time.perf_counter()
        n16 = max(3, iters // 10)
        for _ in range(n16):
            infer(sixteen)
        per_batch = (time.perf_counter() - t0) / n16
        queue.put({"p50_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * float(np.quantile(times, 0.99)),
                   "mean_ms": 1e3 * statistics.fmean(times), "batch16_obs_per_s": 16 / per_batch,
                   "peak_rss_mb": peak_rss_mb(),
                   "compile_s": compile_s, "torch_imported": "torch" in sys.modules})
    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a row that says why
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_backend(backend: str, checkpoint: Path, export: Path, threads: int, warmup: int, iters: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh process per backend: its peak memory and thread pools are its own
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(backend, str(checkpoint), str(export), threads, warmup, iters, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result


def control_loop(export: Path, ticks: int, hz: float = 20.0) -> dict:
    """The real chunker at ``hz`` with the ONNX Runtime policy, for ``ticks`` real control ticks."""
    from srpo.runtime.chunker import ActionChunker, ChunkerConfig
    from srpo.runtime.onnxruntime_backend import OnnxRuntimePolicy

    policy = OnnxRuntimePolicy(export, threads=1)
    obs = _observations(1)
    infer = lambda o: policy.predict_action_chunk(o)[0]  # noqa: E731
    infer(obs)
    cfg = ChunkerConfig(chunk_size=policy.chunk_size, action_dim=policy.spec.action.dim,
                        execute_steps=policy.chunk_size, control_hz=hz)
    late, first_wait, starved = [], 0, 0
    with ActionChunker(infer, cfg) as chunker:
        start = time.perf_counter()
        for k in range(ticks):
            tick = chunker.tick(obs)
            if tick.held and tick.reason == "waiting for the first chunk":
                first_wait += 1
            elif tick.held:
                starved += 1
            wake = start + (k + 1) / hz
            late.append(max(0.0, time.perf_counter() - wake))
            time.sleep(max(0.0, wake - time.perf_counter()))
        stats = chunker.stats
    return {"hz": hz, "ticks": stats.ticks, "held_ticks": stats.held_ticks, "actions": stats.actions_served,
            "requests": stats.requests, "latency_estimate_ms": 1e3 * stats.latency_s,
            "horizon_ms": 1e3 * cfg.horizon_s, "budget_used": stats.latency_s / cfg.horizon_s,
            "first_chunk_hold_ticks": first_wait, "starved_ticks": starved, "tick_overrun_max_ms": 1e3 * max(late)}


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for threads, offset, colour in ((1, -0.2, "tab:blue"), (2, 0.2, "tab:orange")):
        rows = result["threads"].get(str(threads), {})
        names = [b for b in BACKENDS if "p50_ms" in rows.get(b, {})]
        x = np.array([BACKENDS.index(b) for b in names])
        p50 = [rows[b]["p50_ms"] for b in names]
        p99 = [rows[b]["p99_ms"] for b in names]
        axes[0].bar(x + offset, p50, 0.4, color=colour, label=f"{threads} thread(s): p50")
        axes[0].errorbar(x + offset, p50, yerr=[np.zeros(len(p50)), np.subtract(p99, p50)], fmt="none", ecolor="k",
                         capsize=3)
        axes[1].bar(x + offset, [rows[b]["batch16_obs_per_s"] for b in names], 0.4, color=colour,
                    label=f"{threads} thread(s)")
    for ax, title in ((axes[0], "batch-1 latency (ms), bar p50, whisker p99"),
                      (axes[1], "batch-16 throughput (observations/s)")):
        ax.set_xticks(range(len(BACKENDS)), BACKENDS, rotation=25, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    loop = result["control_loop"]
    axes[0].axhline(loop["horizon_ms"] / 8, color="grey", ls=":", lw=0.8)
    axes[0].text(0, loop["horizon_ms"] / 8, "one 20 Hz tick", fontsize=7, va="bottom")
    missing = [b for b in BACKENDS if any("error" in r.get(b, {}) for r in result["threads"].values())]
    fig.suptitle(f"{result['machine']['cpu_count']} CPUs; chunker at 20 Hz: {loop['starved_ticks']}"
                 f" starved ticks of {loop['ticks']}" + (f"; not run here: {', '.join(missing)}" if missing else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--ticks", type=int, default=400, help="20 Hz control ticks for the chunker check")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    args = parser.parse_args()

    from srpo.runtime.tensorrt_backend import tensorrt_status
    from srpo_export.to_onnx import export_onnx

    work = Path(tempfile.mkdtemp(prefix="srpo_latency_"))
    checkpoint = make_checkpoint(work)
    export = export_onnx(checkpoint, work / "export", observations=_observations(16, seed=2))
    trt_ok, trt_reason = tensorrt_status()
    if trt_ok:
        from srpo_export.to_trt import build_engine

        for precision in ("fp32", "fp16"):
            build_engine(export / "model.onnx", export / precision, fp16=precision == "fp16", max_batch=16)
    result: dict = {"machine": machine(), "iters": args.iters, "warmup": args.warmup, "threads": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        rows = {}
        for backend in args.backends.split(","):
            if backend.startswith("tensorrt") and not trt_ok:
                rows[backend] = {"error": f"not run: {trt_reason}"}
                continue
            print(f"{backend} with {threads} thread(s) ...", flush=True)
            rows[backend] = run_backend(backend, checkpoint, export, threads, args.warmup, args.iters)
        base = rows.get("torch_eager", {}).get("p50_ms")
        for r in rows.values():
            if base and "p50_ms" in r:
                r["speedup_p50_vs_torch_eager"] = base / r["p50_ms"]
        result["threads"][str(threads)] = rows
    print("control loop at 20 Hz ...", flush=True)
    result["control_loop"] = control_loop(export, args.ticks)
    loop = result["control_loop"]
    result["targets"] = {"onnxruntime_ge_1.8x_torch_eager_batch1": {
        t: r.get("onnxruntime_cpu", {}).get("speedup_p50_vs_torch_eager", 0) >= 1.8 for t, r in result["threads"].items()},
        "chunker_starves_no_tick_at_20hz": loop["starved_ticks"] == 0}
    out = Path(args.out)
    write_json(out / "policy_latency.json", result)
    plot(result, out / "policy_latency.png")
    for t, rows in result["threads"].items():
        for b, r in rows.items():
            if "p50_ms" in r:
                print(f"{t}t {b:16s} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  b16 "
                      f"{r['batch16_obs_per_s']:7.1f} obs/s  rss {r['peak_rss_mb']:6.0f} MB  "
                      f"x{r.get('speedup_p50_vs_torch_eager', float('nan')):.2f} vs eager")
            else:
                print(f"{t}t {b:16s} {r['error']}")
    print(f"chunker at 20 Hz: {loop}")
    print("targets:", result["targets"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
