"""Serves one action per control tick from a VLA policy's action chunks, hiding the inference latency.

A VLA policy predicts a chunk of K future actions (shape (K, A), env units) from one observation, while the robot's
control loop needs exactly one action per tick at a fixed rate. :class:`ActionChunker` sits between them:

* it hands out the current chunk one action per tick, and never runs a chunk more than ``execute_steps`` ticks past
  the tick of the observation it was computed from;
* async mode (``prefetch=True``, for the robot) submits the next inference to a background executor early enough to
  hide its latency: when the actions left drop to the latency in ticks plus ``margin_ticks``. One request at a time;
* a chunk computed from the observation at step t0 that arrives at step t1 loses its first t1 - t0 actions: steps
  count *executed* actions, so the ones the arm performed while the policy was thinking are dropped, and held ticks
  (the arm did not move) are not; the rest replaces what is left of the old chunk, cross-faded on the overlap with
  ``blend="linear"``. Inference slower than the chunk horizon therefore makes the arm alternate between the fresh
  part of each chunk and holds (each hold says so), instead of stalling for ever;
* with no action for a tick (first chunk not in yet, inference slower than the chunk horizon, a failed or rejected
  inference) the tick is a *hold* with a reason, and the caller commands the arm to hold still. Stale actions are never
  repeated and a chunk with the wrong shape or a non-finite value is rejected, so a NaN never reaches the arm.

The chunker counts steps itself (one per served action; ``stats.ticks`` also counts holds); the clock only measures latency, from a request's
submission to the tick that collects it, which is exactly the delay the prefetch has to hide. The estimate is the max
of recent requests (the prior until the first one). Only the caller's thread touches the chunker's state, the worker
runs ``infer`` alone, so there is no lock; don't mutate an observation after handing it to ``tick``. Numpy only: this
runs on robots without torch.

Async mode (a ROS node's timer callback)::

    with ActionChunker(policy, ChunkerConfig(chunk_size=8, action_dim=7, execute_steps=8)) as chunker:
        result = chunker.tick(latest_observation)    # every control tick
        arm.hold() if result.held else arm.command(result.action)

Sync mode with an ``infer`` callable (``prefetch=False``; a node under a simulated clock, where the arm waits for each
answer, so there is no latency to hide): ``tick`` runs the inference in the caller's thread when the chunk runs out,
so every tick with a good inference serves an action and no row is ever dropped::

    chunker = ActionChunker(policy, ChunkerConfig(chunk_size=8, action_dim=7, execute_steps=8, prefetch=False))
    result = chunker.tick(latest_observation)        # infers here on ticks 0, 8, 16, ...

Sync mode without one (simulation and batched rollouts: the caller runs inference itself, no thread)::

    chunker = ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=7, execute_steps=4, prefetch=False))
    if chunker.needs_chunk():
        chunker.push_chunk(policy(obs))              # obs_tick defaults to the current tick: nothing is stale
    for action in chunker.take(4):                   # rows 0..3 of the chunk, then needs_chunk() is True again
        obs, *_ = env.step(action)
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

BLENDS = ("none", "linear")
_LATENCY_WINDOW = 20  # a max over recent requests only: the estimate recovers once a slow spell is over
_EPS = 1e-6  # 3 ticks of latency measured in floats is 3.0000000000000004 ticks, and must stay 3
_COUNTS = ("ticks", "actions_served", "held_ticks", "requests", "chunks", "errors", "dropped_stale")


class InvalidChunkError(ValueError):
    """A chunk with the wrong shape or a non-finite value, or one stamped with a future observation tick."""


class NoActionError(RuntimeError):
    """``pop_action`` with no action left for the current tick."""


class FutureLike(Protocol):
    def done(self) -> bool: ...

    def result(self) -> Any: ...


class ExecutorLike(Protocol):
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> FutureLike: ...


@dataclass(frozen=True)
class ChunkerConfig:
    """Chunk geometry (K x A, of which the first ``execute_steps`` may run), control rate and prefetch policy."""

    chunk_size: int
    action_dim: int
    execute_steps: int
    control_hz: float = 20.0
    prefetch: bool = True
    blend: str = "none"
    margin_ticks: int = 1
    latency_prior_s: float = 0.05

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.action_dim < 1:
            raise ValueError(f"chunk_size and action_dim must be >= 1, got {self.chunk_size} and {self.action_dim}")
        if not 1 <= self.execute_steps <= self.chunk_size:
            raise ValueError(f"execute_steps must be in [1, chunk_size={self.chunk_size}], got {self.execute_steps}")
        if not (math.isfinite(self.control_hz) and self.control_hz > 0):
            raise ValueError(f"control_hz must be positive and finite, got {self.control_hz}")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}, got {self.blend!r}")
        if self.margin_ticks < 0:
            raise ValueError(f"margin_ticks must be >= 0, got {self.margin_ticks}")
        if not (math.isfinite(self.latency_prior_s) and self.latency_prior_s >= 0):
            raise ValueError(f"latency_prior_s must be >= 0 and finite, got {self.latency_prior_s}")

    @property
    def horizon_s(self) -> float:
        """How long one chunk lasts: inference slower than this starves the arm."""
        return self.execute_steps / self.control_hz

    def to_ticks(self, seconds: float) -> int:
        return max(0, math.ceil(seconds * self.control_hz - _EPS))


@dataclass(frozen=True)
class TickResult:
    """One control tick: an (A,) float32 action, or a hold (``action`` None) with the reason why."""

    action: np.ndarray | None
    reason: str = ""

    @property
    def held(self) -> bool:
        return self.action is None


@dataclass(frozen=True)
class ChunkerStats:
    """Counters since construction (they survive ``reset``: they describe the deployment, not an episode)."""

    ticks: int
    actions_served: int
    held_ticks: int  # ticks with no action: waiting, starved or failed
    requests: int  # inferences requested (submitted to the worker in async mode, run in the tick in sync mode)
    chunks: int  # chunks accepted
    errors: int  # failed inferences and rejected chunks
    dropped_stale: int  # chunk actions whose tick had passed when the chunk arrived
    latency_s: float
    latency_ticks: int


@dataclass
class _Request:
    future: FutureLike
    obs_tick: int
    submitted_at: float


class ActionChunker:
    """Turns action chunks into one action per control tick; see the module docstring for both modes."""

    def __init__(self, infer: Callable[[Any], np.ndarray] | None, config: ChunkerConfig,
                 clock: Callable[[], float] = time.monotonic, executor: ExecutorLike | None = None) -> None:
        if config.prefetch and infer is None:
            raise ValueError("prefetch=True needs an infer callable (or use prefetch=False and push_chunk)")
        self.config = config
        self._infer = infer
        self._clock = clock
        self._executor = executor
        self._owns_executor = executor is None
        self._closed = False
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._n = dict.fromkeys(_COUNTS, 0)
        self._pending: _Request | None = None
        self._abandoned: FutureLike | None = None
        self.reset()

    @property
    def current_tick(self) -> int:
        """The step the next action is for: actions executed since ``reset`` (holds do not advance it)."""
        return self._tick

    @property
    def latency_s(self) -> float:
        return max(self._latencies) if self._latencies else self.config.latency_prior_s

    @property
    def stats(self) -> ChunkerStats:
        return ChunkerStats(**self._n, latency_s=self.latency_s, latency_ticks=self.config.to_ticks(self.latency_s))

    @property
    def in_flight(self) -> bool:
        """Async mode: an inference has been submitted and not yet collected (or abandoned by ``reset``)."""
        return self._pending is not None or self._abandoned is not None

    def remaining(self) -> int:
        """Actions left, from the current tick on."""
        return max(0, self._plan_start + len(self._plan) - self._tick)

    def needs_chunk(self) -> bool:
        """Sync mode: no action left. Async mode: few enough left that a request now just hides the latency."""
        cfg = self.config
        lead = cfg.to_ticks(self.latency_s) + cfg.margin_ticks if cfg.prefetch else 0
        return self.remaining() <= lead

    def reset(self) -> None:
        """New episode: drops the chunk, restarts ticks at 0, ignores a request in flight; keeps stats and latency."""
        self._tick = 0
        self._plan = np.empty((0, self.config.action_dim), np.float32)  # actions for ticks _plan_start, ...
        self._plan_start = 0
        self._received = False
        self._error = ""
        if self._pending is not None:
            getattr(self._pending.future, "cancel", lambda: False)()
            # No new request until it ends: on the single worker it would only queue, with an older observation.
            self._abandoned, self._pending = self._pending.future, None

    def push_chunk(self, chunk: np.ndarray, obs_tick: int | None = None) -> None:
        """Takes a (K, A) chunk computed from the observation of ``obs_tick`` (default: the current tick).

        Rows for past ticks are dropped; the rest replaces the current chunk. Raises :class:`InvalidChunkError`
        (a ``ValueError``), keeping the current chunk, on a wrong shape, a non-finite value or a future ``obs_tick``.
        """
        cfg = self.config
        obs_tick = self._tick if obs_tick is None else int(obs_tick)
        if obs_tick > self._tick:
            raise InvalidChunkError(f"obs_tick {obs_tick} is in the future (current tick {self._tick})")
        actions = _validated(chunk, cfg)
        stale = min(self._tick - obs_tick, cfg.execute_steps)
        new = actions[stale:cfg.execute_steps]
        if cfg.blend == "linear":
            new = _cross_fade(self._plan[self._tick - self._plan_start:], new)
        self._plan, self._plan_start, self._received = new, self._tick, True
        self._n["chunks"] += 1
        self._n["dropped_stale"] += stale

    def pop_action(self) -> np.ndarray:
        """The (A,) action for the current tick; advances one tick."""
        if self.remaining() == 0:
            raise NoActionError(f"no action left at tick {self._tick}: push a chunk first (needs_chunk() is True)")
        return self.take(1)[0]

    def take(self, n: int) -> np.ndarray:
        """Up to ``n`` next actions, (m, A) with m = min(n, remaining()); advances m ticks."""
        if n < 0:
            raise ValueError(f"take(n) needs n >= 0, got {n}")
        m = min(n, self.remaining())
        first = self._tick - self._plan_start
        self._tick += m
        self._n["ticks"] += m
        self._n["actions_served"] += m
        return self._plan[first:first + m].copy()

    def tick(self, observation: Any) -> TickResult:
        """One control tick: collects a finished inference, requests the next one if due, serves or holds (sync mode:
        infers now, in this thread, when no action is left)."""
        if self._infer is None:
            raise RuntimeError("tick() needs an infer callable; without one use needs_chunk/push_chunk/pop_action")
        if self._closed:
            raise RuntimeError("the chunker is closed")
        if not self.config.prefetch:
            if self.needs_chunk():
                self._infer_now(observation)
        else:
            self._collect()
            if self._pending is None and self._abandoned is None and self.needs_chunk():
                self._submit(observation)
        if self.remaining() > 0:
            return TickResult(self.pop_action())
        reason = self._hold_reason()
        # a held tick moves nothing: the arm is where the pending chunk's observation saw it, so that chunk's first
        # actions are still the right ones (counting held ticks as elapsed would starve a slow policy for ever)
        self._n["ticks"] += 1
        self._n["held_ticks"] += 1
        return TickResult(None, reason)

    def _collect(self) -> None:
        if self._abandoned is not None and self._abandoned.done():
            self._abandoned = None
        request = self._pending
        if request is None or not request.future.done():
            return
        self._pending = None
        try:
            chunk = request.future.result()
            self._latencies.append(self._clock() - request.submitted_at)
            self.push_chunk(chunk, request.obs_tick)
        except Exception as exc:  # a bad inference must cost a hold, never the control loop
            self._fail(exc)
        else:
            self._error = ""

    def _infer_now(self, observation: Any) -> None:
        started = self._clock()
        self._n["requests"] += 1
        try:
            chunk = self._infer(observation)
            self._latencies.append(self._clock() - started)
            self.push_chunk(chunk)  # computed from this tick's observation: nothing is stale
        except Exception as exc:  # a bad inference must cost a hold, never the control loop
            self._fail(exc)
        else:
            self._error = ""

    def _submit(self, observation: Any) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="srpo-chunker")
        submitted_at = self._clock()
        try:
            future = self._executor.submit(self._infer, observation)
        except Exception as exc:
            self._fail(exc)
            return
        self._pending = _Request(future, self._tick, submitted_at)
        self._n["requests"] += 1

    def _fail(self, exc: Exception) -> None:
        self._n["errors"] += 1
        self._error = f"inference error: {type(exc).__name__}: {exc}"

    def _hold_reason(self) -> str:
        if self._error:
            return self._error
        if not self._received:
            return "waiting for the first chunk"
        cfg, latency = self.config, self.latency_s
        if self._pending is not None:  # a request slower than all recent ones is the better explanation
            latency = max(latency, self._clock() - self._pending.submitted_at)
        if cfg.to_ticks(latency) >= cfg.execute_steps:
            return f"starved: inference ({latency:.2f} s) is slower than the chunk horizon ({cfg.horizon_s:.2f} s)"
        return f"starved: the next chunk is late (inference {latency:.2f} s, chunk horizon {cfg.horizon_s:.2f} s)"

    def close(self) -> None:
        """Stops the executor the chunker created (an injected one belongs to the caller); idempotent."""
        self._closed = True
        if self._owns_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def __enter__(self) -> ActionChunker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _validated(chunk: Any, cfg: ChunkerConfig) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # a float64 too big for float32 becomes inf, rejected just below
            actions = np.array(chunk, dtype=np.float32)  # a copy: the caller may reuse its buffer
    except (TypeError, ValueError) as exc:
        raise InvalidChunkError(f"chunk is not a numeric array: {exc}") from exc
    if actions.shape != (cfg.chunk_size, cfg.action_dim):
        raise InvalidChunkError(f"chunk has shape {actions.shape}, expected {(cfg.chunk_size, cfg.action_dim)}")
    if not np.isfinite(actions).all():
        raise InvalidChunkError(f"chunk has {int((~np.isfinite(actions)).sum())} non-finite values")
    return actions


def _cross_fade(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """On the m steps both chunks cover, the new chunk's weight ramps 1/(m+1) ... m/(m+1): no jump at either end."""
    m = min(len(old), len(new))
    if m == 0:
        return new
    weight = (np.arange(1, m + 1, dtype=np.float32) / np.float32(m + 1))[:, None]
    out = new.copy()
    out[:m] = (1 - weight) * old[:m] + weight * new[:m]
    return out
