"""The step scheduler on its own (no model): priorities, aging, batching by key, faults, deadlines, cancels."""

from __future__ import annotations

import time

import pytest

from service.scheduler import Job, Overloaded, Scheduler, SchedulerConfig, Step


class Recorder:
    """Runners that record each batch they ran: (kind, payloads)."""

    def __init__(self, fail_on=()) -> None:
        self.batches: list[tuple[str, list]] = []
        self.fail_on = set(fail_on)

    def runner(self, kind):
        def run(payloads):
            self.batches.append((kind, list(payloads)))
            if self.fail_on & set(payloads):
                raise RuntimeError(f"bad payload in {payloads}")
            return [f"{kind}:{p}" for p in payloads]
        return run


def scheduler(rec: Recorder, **cfg) -> Scheduler:
    kinds = ("decode", "call", "track", "encode", "everything")
    config = SchedulerConfig(**{"max_wait_s": 0.0, "aging_s": 1000.0, **cfg})
    return Scheduler({k: rec.runner(k) for k in kinds}, config)


def one_step(kind, payload, key=None):
    return (yield Step(kind, payload, key))


def two_steps(payload):
    a = yield Step("encode", payload, key="image")
    b = yield Step("decode", a)
    return b


def drain(s: Scheduler) -> None:
    while s.tick():
        pass


def submit(s, steps, deadline=60.0):
    return s.submit(Job(steps, time.monotonic() + deadline))


def test_a_job_runs_its_steps_in_order_and_resolves_with_its_return_value():
    rec = Recorder()
    s = scheduler(rec)
    job = submit(s, two_steps("img"))
    drain(s)
    assert job.future.result() == "decode:encode:img"
    assert rec.batches == [("encode", ["img"]), ("decode", ["encode:img"])]


def test_interactive_steps_run_before_background_ones():
    rec = Recorder()
    s = scheduler(rec)
    jobs = [submit(s, one_step(kind, kind)) for kind in ("everything", "encode", "track", "call", "decode")]
    drain(s)
    assert [kind for kind, _ in rec.batches] == ["decode", "call", "track", "encode", "everything"]
    assert all(j.future.done() for j in jobs)


def test_aging_lets_a_long_waiting_background_step_overtake_fresh_clicks():
    rec = Recorder()
    s = scheduler(rec, aging_s=0.05)
    submit(s, one_step("everything", "amg"))
    s._admit(0)
    time.sleep(0.3)  # 0.3 s of waiting = 6 priority classes
    submit(s, one_step("decode", "click"))
    s.tick()
    assert rec.batches[0] == ("everything", ["amg"])


def test_steps_with_an_equal_key_share_a_batch_up_to_max_batch():
    rec = Recorder()
    s = scheduler(rec, encode_batch=3)
    for i in range(4):
        submit(s, one_step("encode", i, key="image"))
    submit(s, one_step("encode", "other", key="frame"))
    submit(s, one_step("decode", "alone-a"))
    submit(s, one_step("decode", "alone-b"))
    drain(s)
    assert ("encode", [0, 1, 2]) in rec.batches and ("encode", [3]) in rec.batches
    assert ("encode", ["other"]) in rec.batches  # another key: its own batch
    assert ("decode", ["alone-a"]) in rec.batches and ("decode", ["alone-b"]) in rec.batches  # key None: alone


def test_an_encode_waits_up_to_max_wait_for_company():
    rec = Recorder()
    s = scheduler(rec, encode_batch=4, max_wait_s=0.2)
    submit(s, one_step("encode", "a", key="image"))
    assert not s.tick()  # not due yet
    submit(s, one_step("encode", "b", key="image"))
    deadline = time.monotonic() + 5
    while not s.tick() and time.monotonic() < deadline:  # a tick blocks until the batch is due
        pass
    assert rec.batches == [("encode", ["a", "b"])]


def test_a_failing_step_fails_only_its_own_job():
    rec = Recorder(fail_on={"bad"})
    s = scheduler(rec)
    jobs = {p: submit(s, one_step("encode", p, key="image")) for p in ("a", "bad", "c")}
    drain(s)
    assert jobs["a"].future.result() == "encode:a" and jobs["c"].future.result() == "encode:c"
    with pytest.raises(RuntimeError, match="bad payload"):
        jobs["bad"].future.result()


def test_out_of_memory_splits_the_batch_and_retries():
    class OOM(Exception):
        pass

    sizes = []

    def encode(payloads):
        sizes.append(len(payloads))
        if len(payloads) > 2:
            raise OOM()
        return [p * 10 for p in payloads]

    s = Scheduler({"encode": encode}, SchedulerConfig(encode_batch=8, max_wait_s=0.0),
                  is_oom=lambda exc: isinstance(exc, OOM))
    jobs = [submit(s, one_step("encode", i, key="image")) for i in range(8)]
    drain(s)
    assert [j.future.result() for j in jobs] == [i * 10 for i in range(8)]
    assert sizes == [8, 4, 2, 2, 4, 2, 2]  # halves until a batch fits


def test_a_job_past_its_deadline_is_dropped_between_steps():
    rec = Recorder()
    s = scheduler(rec)
    slow = submit(s, two_steps("img"), deadline=0.05)
    s.tick()  # its encode runs
    time.sleep(0.1)
    drain(s)
    with pytest.raises(TimeoutError):
        slow.future.result()
    assert [kind for kind, _ in rec.batches] == ["encode"]  # the decode never ran


def test_a_cancelled_job_runs_no_more_steps_and_is_counted():
    rec = Recorder()
    s = scheduler(rec)
    job = submit(s, two_steps("img"))
    s.tick()
    job.future.cancel()  # the client went away
    drain(s)
    assert [kind for kind, _ in rec.batches] == ["encode"]
    assert s.cancelled_steps == 1


def test_more_jobs_than_max_jobs_are_refused():
    s = scheduler(Recorder(), max_jobs=2)
    submit(s, one_step("decode", 1))
    submit(s, one_step("decode", 2))
    with pytest.raises(Overloaded):
        submit(s, one_step("decode", 3))
    drain(s)
    submit(s, one_step("decode", 4))  # finished jobs free their places
