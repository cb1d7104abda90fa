"""ActionChunker: which action each tick gets, when it holds and why, with a fake clock and a fake executor.

The fake policy writes its observation and the row index into every action (action = [obs, row]), so a test can say
exactly which element of which chunk a tick was served. The fake executor runs the policy at submission and reports
done once the fake clock passes submission + latency: deterministic, no threads, no sleeps (except one real test).

The chunker's position counts *executed* actions: a held tick does not move the arm, so it does not advance the
position. The row a tick must get is therefore the number of actions served since the tick of the chunk's
observation, which :func:`assert_each_action_is_its_row` recounts from the results alone.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from srpo.runtime.chunker import ActionChunker, ChunkerConfig, InvalidChunkError, NoActionError, TickResult

HZ = 20.0
DT = 1 / HZ


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeFuture:
    def __init__(self, clock: FakeClock, deadline: float, value=None, error: Exception | None = None) -> None:
        self.clock, self.deadline, self.value, self.error = clock, deadline, value, error
        self.cancelled = False

    def done(self) -> bool:
        return self.clock() >= self.deadline - 1e-9

    def result(self):
        assert self.done(), "the chunker must never block on an unfinished request"
        if self.error is not None:
            raise self.error
        return self.value

    def cancel(self) -> bool:
        return False  # as a running request: it completes anyway and must be ignored


class FakeExecutor:
    """Completes each request ``latency`` seconds (a float, or one per request) after its submission."""

    def __init__(self, clock: FakeClock, latency) -> None:
        self.clock, self.latency, self.log = clock, latency, []

    def submit(self, fn, *args):
        latency = self.latency(len(self.log)) if callable(self.latency) else self.latency
        try:
            future = FakeFuture(self.clock, self.clock() + latency, value=fn(*args))
        except Exception as exc:
            future = FakeFuture(self.clock, self.clock() + latency, error=exc)
        self.log.append((args[0], future))
        return future

    def origin_at(self, now: float):
        """The observation of the newest request finished by ``now`` (requests run one at a time)."""
        finished = [obs for obs, f in self.log if now >= f.deadline - 1e-9]
        return finished[-1] if finished else None


def tagged_policy(k: int):
    def infer(obs):
        return np.stack([np.full(k, obs, np.float32), np.arange(k, dtype=np.float32)], axis=1)
    return infer


def make(latency, k=8, execute=8, infer=None, **cfg):
    clock = FakeClock()
    executor = FakeExecutor(clock, latency)
    config = ChunkerConfig(chunk_size=k, action_dim=2, execute_steps=execute, control_hz=HZ, **cfg)
    return ActionChunker(infer or tagged_policy(k), config, clock=clock, executor=executor), clock, executor


def run(chunker: ActionChunker, clock: FakeClock, steps: range, obs=lambda t: t) -> list[TickResult]:
    """Ticks at global steps ``steps`` (the clock keeps running across resets); obs(step) is the observation."""
    results = []
    for step in steps:
        clock.now = step * DT
        results.append(chunker.tick(obs(step)))
    return results


def executed_before(results: list[TickResult]) -> list[int]:
    """Actions served before each tick: the position the chunker must be at, recounted from the results alone."""
    return list(itertools.accumulate((not r.held for r in results), initial=0))[:-1]


def assert_each_action_is_its_row(results, steps, executor, execute_steps, obs=lambda step: step) -> None:
    """Every served action is [origin, row] with origin the observation of the newest finished request and row the
    actions executed since the tick of that observation (held ticks consume no row), and row < execute_steps.

    Only for runs in which every request that finished before a served tick succeeded, and ``results`` starts at
    position 0 (the chunker's construction or ``reset``).
    """
    steps = list(steps)
    assert len(steps) == len(results)
    position = dict(zip(steps, executed_before(results)))
    step_of = {obs(step): step for step in steps}
    for step, r in zip(steps, results):
        if r.held:
            continue
        assert r.action.dtype == np.float32 and r.action.shape == (2,)
        origin = executor.origin_at(step * DT)
        row = position[step] - position[step_of[origin]]  # the request was submitted before that tick's action
        assert r.action.tolist() == [origin, row], f"step {step}"
        assert 0 <= row < execute_steps, f"step {step}"


def test_fast_inference_never_starves_and_serves_the_aligned_action():
    chunker, clock, executor = make(latency=0.12)  # 2.4 ticks -> arrives 3 ticks after its observation
    first = run(chunker, clock, range(3))
    assert all(r.held for r in first) and chunker.current_tick == 0  # held ticks do not advance the position
    results = run(chunker, clock, range(3, 203))
    assert not any(r.held for r in results)
    # The first chunk comes in while the arm held since its observation: nothing is stale, rows 0.. in order. The
    # next request (observation of step 7, position 4) then arrives at step 10 after 3 executed actions: row 3.
    assert [r.action.tolist() for r in results[:8]] == [[0, row] for row in range(7)] + [[7, 3]]
    assert_each_action_is_its_row(first + results, range(203), executor, execute_steps=8)
    stats = chunker.stats
    assert stats.latency_ticks == 3
    assert stats.chunks == 50 and stats.dropped_stale == 3 * (stats.chunks - 1)  # all but the first lose 3 rows
    assert stats.held_ticks == 3 and stats.actions_served == 200 and stats.ticks == 203
    assert chunker.current_tick == 200
    assert stats.errors == 0 and stats.requests == stats.chunks


def test_inference_slower_than_the_horizon_holds_and_never_runs_a_chunk_past_execute_steps():
    chunker, clock, executor = make(latency=0.6)  # 12 ticks > 8-step horizon
    results = run(chunker, clock, range(100))
    # Requests go out at steps 0, 12, 24, ... (latency 12 ticks >= what is left: submitted as soon as one arrives).
    # The chunk of step 0 arrives at step 12 after 12 holds: nothing executed, nothing stale, all 8 rows run
    # (steps 12..19). The chunk of step 12 (position 0) arrives at step 24 after those 8 actions: all 8 rows stale.
    # The chunk of step 24 (position 8) arrives at step 36 after 12 holds: all fresh again, and so on.
    served_steps = [s for s in range(100) if s >= 12 and (s - 12) % 24 < 8]
    assert [s for s, r in enumerate(results) if not r.held] == served_steps
    assert [r.action.tolist() for r in results if not r.held] == [
        [origin, row] for origin in (0, 24, 48, 72) for row in range(8)]
    assert_each_action_is_its_row(results, range(100), executor, execute_steps=8)
    assert all(r.reason == "waiting for the first chunk" for r in results[:12])
    for r in results[12:]:
        if r.held:
            assert r.reason == "starved: inference (0.60 s) is slower than the chunk horizon (0.40 s)"
    stats = chunker.stats
    assert stats.actions_served == 32 and stats.held_ticks == 68 and stats.ticks == 100
    assert chunker.current_tick == 32  # executed actions only
    assert stats.requests == 9 and stats.chunks == 8 and stats.dropped_stale == 4 * 8 and stats.errors == 0


def test_intermittently_slow_inference_serves_only_within_execute_steps_of_each_observation():
    chunker, clock, executor = make(latency=lambda i: 0.1 if i % 2 == 0 else 0.6, k=10, execute=8)
    results = run(chunker, clock, range(150))
    served = [r for r in results if not r.held]
    assert served and chunker.stats.held_ticks > 20
    # k = 10 > execute_steps = 8: rows 8 and 9 exist and must never be served.
    assert_each_action_is_its_row(results, range(150), executor, execute_steps=8)
    assert max(r.action[1] for r in served) == 7
    # Steady state, period 14 ticks: rows 6, 7 of a slow chunk, rows 2..7 of the fast one after it, 6 holds.
    assert [r.action.tolist() for r in results[33:41]] == [[21, 6], [21, 7]] + [[33, row] for row in range(2, 8)]
    pattern = "".join("." if r.held else "x" for r in results)
    assert pattern == "..xxxxxxxx.........xxxxxxxx" + "......xxxxxxxx" * 8 + "......xxxxx"
    reasons = {r.reason for r in results if r.held}
    assert "starved: inference (0.60 s) is slower than the chunk horizon (0.40 s)" in reasons
    assert chunker.stats.held_ticks == sum(r.held for r in results) == 65
    assert chunker.stats.actions_served == chunker.current_tick == len(served) == 85


def test_waits_for_the_first_chunk_with_one_request_in_flight():
    chunker, clock, executor = make(latency=0.12)
    results = run(chunker, clock, range(3))
    assert [r.reason for r in results] == ["waiting for the first chunk"] * 3
    assert all(r.action is None for r in results)
    assert len(executor.log) == 1 and chunker.stats.requests == 1
    assert chunker.current_tick == 0 and chunker.stats.held_ticks == 3 and chunker.stats.ticks == 3
    # The arm held since the observation of tick 0: the chunk starts at its row 0, nothing is stale.
    assert run(chunker, clock, range(3, 4))[0].action.tolist() == [0, 0]
    assert chunker.stats.dropped_stale == 0 and chunker.current_tick == 1


def constant_chunk(value: float, k: int = 8) -> np.ndarray:
    return np.stack([np.full(k, value, np.float32), np.arange(k, dtype=np.float32)], axis=1)


@pytest.mark.parametrize("blend", ["none", "linear"])
def test_blend_on_the_overlap(blend):
    config = ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=8, prefetch=False, blend=blend)
    chunker = ActionChunker(None, config)
    chunker.push_chunk(constant_chunk(10.0))  # observation tick 0: rows for ticks 0..7
    chunker.take(2)
    chunker.push_chunk(constant_chunk(24.0), obs_tick=1)  # at tick 2: row 0 is stale, rows 1..7 for ticks 2..8
    served = chunker.take(8)
    assert len(served) == 7 and chunker.stats.dropped_stale == 1
    new_rows = np.arange(1, 8)
    if blend == "none":
        np.testing.assert_array_equal(served[:, 0], np.full(7, 24.0))
        np.testing.assert_array_equal(served[:, 1], new_rows)
        return
    # Ticks 2..7 are in both chunks (m = 6): the new weight is 1/7 .. 6/7, then tick 8 is the new chunk alone.
    weights = np.array([1, 2, 3, 4, 5, 6, 7]) / 7
    old_rows = np.array([2, 3, 4, 5, 6, 7, 0])
    np.testing.assert_allclose(served[:, 0], [10 + 14 * w for w in weights[:6]] + [24.0], rtol=1e-6)
    np.testing.assert_allclose(served[:6, 1], (1 - weights[:6]) * old_rows[:6] + weights[:6] * new_rows[:6], rtol=1e-6)
    assert served[6, 1] == 7.0
    assert served[0, 0] == pytest.approx(12.0) and served[5, 0] == pytest.approx(22.0)


def test_failing_inference_holds_with_the_error_and_recovers():
    broken = threading.Event()
    broken.set()
    good = tagged_policy(8)

    def infer(obs):
        if broken.is_set():
            raise RuntimeError("camera timeout")
        return good(obs)

    chunker, clock, executor = make(latency=0.1, infer=infer)  # 2 ticks
    results = run(chunker, clock, range(10))
    assert all(r.held for r in results)
    assert all(r.reason == "inference error: RuntimeError: camera timeout" for r in results[2:])
    assert chunker.stats.errors == 4 and chunker.stats.requests == 5  # retried as soon as each failure came back
    assert chunker.current_tick == 0  # ten holds, nothing executed
    broken.clear()
    later = run(chunker, clock, range(10, 20))
    assert later[0].held and later[1].held  # the request from tick 10 arrives at tick 12
    assert not any(r.held for r in later[2:])
    assert later[2].action.tolist() == [10, 0]  # the arm held since that observation: nothing stale
    assert chunker.stats.errors == 5  # the request in flight at tick 10 was still the broken policy
    assert [r.action.tolist() for r in later[2:]] == [[10, row] for row in range(7)] + [[17, 2]]
    assert_each_action_is_its_row(results + later, range(20), executor, execute_steps=8)
    assert chunker.stats.dropped_stale == 2 and chunker.current_tick == 8


def test_error_while_the_chunk_still_has_actions_keeps_serving_them():
    calls = []
    good = tagged_policy(8)

    def infer(obs):
        calls.append(obs)
        if len(calls) > 1:
            raise RuntimeError("gpu lost")
        return good(obs)

    chunker, clock, _ = make(latency=0.1, infer=infer)
    results = run(chunker, clock, range(12))
    assert results[0].held and results[1].held
    # The chunk of tick 0 arrives at tick 2, nothing stale; the prefetch from tick 7 fails at tick 9, while the
    # chunk still has row 7 for that tick: it is served, and the error only shows once the chunk runs out.
    assert [r.action.tolist() for r in results[2:10]] == [[0, row] for row in range(8)]
    assert all(r.reason == "inference error: RuntimeError: gpu lost" for r in results[10:])
    assert calls == [0, 7, 9, 11] and chunker.stats.errors == 2  # failures collected at ticks 9 and 11


@pytest.mark.parametrize("bad", [np.full((8, 2), np.nan), np.zeros((7, 2)), np.zeros((8, 3)), np.full((8, 2), 1e40)])
def test_sync_rejects_bad_chunks(bad):
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=4, prefetch=False))
    with pytest.raises(InvalidChunkError) as info:
        chunker.push_chunk(bad)
    assert isinstance(info.value, ValueError)
    assert chunker.needs_chunk() and chunker.remaining() == 0
    with pytest.raises(NoActionError):
        chunker.pop_action()


def test_sync_rejects_a_partly_nan_chunk_and_keeps_the_previous_one():
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=4, prefetch=False))
    chunker.push_chunk(constant_chunk(1.0))
    bad = constant_chunk(2.0)
    bad[3, 1] = np.inf
    with pytest.raises(InvalidChunkError, match="non-finite"):
        chunker.push_chunk(bad)
    np.testing.assert_array_equal(chunker.take(4), constant_chunk(1.0)[:4])


def test_async_rejected_chunk_is_a_hold_and_never_reaches_the_arm():
    good = tagged_policy(8)

    def infer(obs):
        chunk = good(obs)
        if obs == 0:
            chunk[4, 0] = np.nan
        return chunk

    chunker, clock, _ = make(latency=0.1, infer=infer)
    results = run(chunker, clock, range(40))
    assert results[2].held and "non-finite" in results[2].reason and "InvalidChunkError" in results[2].reason
    assert chunker.stats.errors == 1
    served = [r.action for r in results if not r.held]
    assert len(served) == 36 and all(np.isfinite(a).all() for a in served)
    assert all(a[0] != 0 for a in served)


def test_reset_drops_the_chunk_and_ignores_the_request_in_flight():
    chunker, clock, executor = make(latency=0.12)
    # The chunk of tick 0 serves rows 0.. from step 3; with 4 actions left (step 7, position 4) the next request
    # goes out, due at step 10: in flight at the reset.
    before = run(chunker, clock, range(9))
    assert [r.action.tolist() for r in before[3:]] == [[0, row] for row in range(6)]
    assert [obs for obs, _ in executor.log] == [0, 7] and not executor.log[1][1].done()
    chunker.reset()
    assert chunker.current_tick == 0 and chunker.remaining() == 0
    after = run(chunker, clock, range(9, 40), obs=lambda step: 1000 + step)
    assert after[0].reason == "waiting for the first chunk"  # the old chunk still had rows 6, 7 for this tick
    served = [r.action for r in after if not r.held]
    assert served and all(a[0] >= 1000 for a in served)
    # The old request ends at step 10; the next one is not sent before, so it carries a fresher observation.
    assert [obs for obs, _ in executor.log[:3]] == [0, 7, 1010]
    first = next(i for i, r in enumerate(after) if not r.held)
    assert first == 4  # steps 9..12 held: the request of step 10 arrives at step 13
    assert after[first].action.tolist() == [1010, 0]  # position restarts at 0 and holds don't advance it
    assert_each_action_is_its_row(after, range(9, 40), executor, execute_steps=8, obs=lambda step: 1000 + step)
    assert chunker.stats.errors == 0 and {r.reason for r in after if r.held} == {"waiting for the first chunk"}


def test_reset_ignores_a_result_that_would_still_fit_the_new_episode():
    chunker, clock, executor = make(latency=0.12)
    # Request for position 0 in flight, done at step 3, when the new episode has held since its start and is still
    # at position 0: it would fit it exactly, nothing stale, and must still be ignored.
    run(chunker, clock, range(1))
    chunker.reset()
    after = run(chunker, clock, range(1, 30), obs=lambda step: 1000 + step)
    served = [r.action for r in after if not r.held]
    assert served and all(a[0] >= 1000 for a in served)
    # The old request ends at step 3; the new one (observation of step 3, position 0) arrives at step 6.
    assert all(r.held for r in after[:5]) and after[5].action.tolist() == [1003, 0]
    assert_each_action_is_its_row(after, range(1, 30), executor, execute_steps=8, obs=lambda step: 1000 + step)
    assert chunker.stats.errors == 0 and [obs for obs, _ in executor.log[:2]] == [0, 1003]


def test_sync_reset_drops_the_chunk():
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=8, prefetch=False))
    chunker.push_chunk(constant_chunk(1.0))
    chunker.pop_action()
    chunker.reset()
    assert chunker.needs_chunk()
    with pytest.raises(NoActionError):
        chunker.pop_action()


def test_sync_mode_runs_rows_0_to_e_minus_1_of_each_chunk_open_loop():
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=3, prefetch=False))
    assert chunker.needs_chunk()
    executed = []
    for n in range(5):
        assert chunker.needs_chunk()
        chunker.push_chunk(tagged_policy(8)(100 + n))
        for _ in range(3):
            assert not chunker.needs_chunk()
            executed.append(chunker.pop_action().tolist())
    assert executed == [[100 + n, row] for n in range(5) for row in range(3)]
    assert chunker.needs_chunk() and chunker.stats.dropped_stale == 0 and chunker.stats.actions_served == 15

    chunker.push_chunk(tagged_policy(8)(7))
    np.testing.assert_array_equal(chunker.take(2), [[7, 0], [7, 1]])
    np.testing.assert_array_equal(chunker.take(10), [[7, 2]])  # only execute_steps rows, never row 3
    empty = chunker.take(4)
    assert empty.shape == (0, 2) and empty.dtype == np.float32
    with pytest.raises(NoActionError, match="push a chunk first"):
        chunker.pop_action()


def test_sync_push_copies_the_chunk():
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=4, action_dim=2, execute_steps=4, prefetch=False))
    buffer = np.zeros((4, 2), np.float32)
    chunker.push_chunk(buffer)
    buffer[:] = np.nan  # the caller reuses its batch buffer for the next inference
    assert np.isfinite(chunker.take(4)).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(execute_steps=9), "execute_steps"),
    (dict(execute_steps=0), "execute_steps"),
    (dict(blend="cubic"), "blend"),
    (dict(control_hz=0.0), "control_hz"),
    (dict(control_hz=-20.0), "control_hz"),
    (dict(control_hz=float("nan")), "control_hz"),
    (dict(margin_ticks=-1), "margin_ticks"),
    (dict(latency_prior_s=-0.1), "latency_prior_s"),
    (dict(chunk_size=0, execute_steps=0), "chunk_size"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChunkerConfig(**{**dict(chunk_size=8, action_dim=2, execute_steps=8), **kwargs})


def test_prefetch_needs_an_infer_callable():
    with pytest.raises(ValueError, match="infer"):
        ActionChunker(None, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=8))


def test_real_thread_pool_serves_finite_actions():
    calls = []

    def infer(obs):
        calls.append(obs)
        time.sleep(0.005)
        chunk = tagged_policy(8)(obs)
        if len(calls) == 2:
            chunk[0, 0] = np.nan
        return chunk

    config = ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=8, control_hz=200.0)
    with ActionChunker(infer, config) as chunker:
        served, deadline = [], time.monotonic() + 10.0
        while len(served) < 20 and time.monotonic() < deadline:
            result = chunker.tick(chunker.current_tick)
            if not result.held:
                served.append(result.action)
            time.sleep(0.002)
    assert len(served) >= 20 and all(np.isfinite(a).all() for a in served)
    with pytest.raises(RuntimeError, match="closed"):
        chunker.tick(0)


# ------------------------------------------------------------------------------------------------ sync tick


def test_sync_tick_infers_in_the_tick_when_the_chunk_runs_out_and_serves_every_tick():
    """Under a simulated clock the arm waits for each answer: no latency to hide, no row dropped, no hold."""
    calls = []
    policy = tagged_policy(8)

    def infer(obs):
        calls.append(obs)
        return policy(obs)

    chunker = ActionChunker(infer, ChunkerConfig(chunk_size=8, action_dim=2, execute_steps=6, prefetch=False))
    results = [chunker.tick(t) for t in range(14)]
    assert not any(r.held for r in results)
    assert calls == [0, 6, 12]  # the observation of the tick each chunk was computed for
    assert [r.action.tolist() for r in results] == [[6 * (t // 6), t % 6] for t in range(14)]
    stats = chunker.stats
    assert (stats.requests, stats.chunks, stats.dropped_stale, stats.held_ticks) == (3, 3, 0, 0)


def test_sync_tick_holds_on_a_failed_or_non_finite_inference_and_retries_next_tick():
    outcomes = iter(["raise", "nan", "ok"])
    policy = tagged_policy(4)

    def infer(obs):
        what = next(outcomes)
        if what == "raise":
            raise RuntimeError("gpu lost")
        chunk = policy(obs)
        if what == "nan":
            chunk[2, 0] = np.nan
        return chunk

    chunker = ActionChunker(infer, ChunkerConfig(chunk_size=4, action_dim=2, execute_steps=4, prefetch=False))
    first, second, third = (chunker.tick(t) for t in (10, 11, 12))
    assert first.held and first.reason == "inference error: RuntimeError: gpu lost"
    assert second.held and "non-finite" in second.reason
    assert third.action.tolist() == [12, 0]  # the first good chunk, from the observation of its own tick
    assert chunker.stats.errors == 2 and chunker.stats.held_ticks == 2 and chunker.current_tick == 1


def test_tick_without_an_infer_callable_is_refused():
    chunker = ActionChunker(None, ChunkerConfig(chunk_size=4, action_dim=2, execute_steps=4, prefetch=False))
    with pytest.raises(RuntimeError, match="needs an infer callable"):
        chunker.tick(0)
