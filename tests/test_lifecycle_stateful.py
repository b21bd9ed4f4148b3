"""A stateful property test of the job lifecycle, with a second real process acting on the same jobs.

Hypothesis drives random sequences of create / start / refresh / wait / cancel in this process, each raced
against another action by a long-lived peer process on the same registry, plus starts interrupted by
Ctrl-C here and starts killed with SIGKILL in a third process. After every step:

* a job that cancel() called cancelled (in either process) is cancelled in the registry, and its job at the
  service (if one was created) is cancelled too: nothing runs, nothing is paid for after "cancelled";
* a terminal status never changes;
* a job is ``validating`` only if the start that moved it there was cut off (the status says the truth);

and at the end every job can be taken to a terminal status with start() and wait().
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import orjson
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from ftkit import FineTuneJob, FtkitError, JobError, JobSpec, JobStatus, JobStore, register_backend
from ftkit.submitter import Submitter
from ftkit.testing import FakeBackend
from tests.helpers import spam_rows, write_jsonl

register_backend(FakeBackend)

ROOT = Path(__file__).parents[1]
ACTIONS = ("start", "refresh", "wait", "cancel")

# The peer: one action per line on stdin ("JOB_ID ACTION"), one answer per line on stdout.
PEER = textwrap.dedent(
    """
    import sys
    import ftkit
    from ftkit.testing import FakeBackend
    ftkit.register_backend(FakeBackend)
    for line in sys.stdin:
        job_id, action = line.split()
        job = ftkit.FineTuneJob.get(job_id)
        try:
            if action == "start":
                result = job.start().status.value
            elif action == "refresh":
                result = job.refresh().value
            elif action == "wait":
                result = job.wait(timeout=0.2, poll_interval=0.02).value
            else:
                result = job.cancel().value
        except ftkit.FtkitError as e:
            result = type(e).__name__
        print(result, flush=True)
    """
)
STARTER = textwrap.dedent(
    """
    import sys
    import ftkit
    from ftkit.testing import FakeBackend
    ftkit.register_backend(FakeBackend)
    ftkit.FineTuneJob.get(sys.argv[1]).start()
    """
)


def _act(job: FineTuneJob, action: str) -> str:
    try:
        if action == "start":
            return job.start().status.value
        if action == "refresh":
            return job.refresh().value
        if action == "wait":
            return job.wait(timeout=0.2, poll_interval=0.02).value
        return job.cancel().value
    except FtkitError as e:
        return type(e).__name__


class JobLifecycle(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="ftkit-lifecycle-"))
        self.store = JobStore(self.tmp / "home")
        self.spec = JobSpec(task="classification", train=write_jsonl(self.tmp / "train.jsonl", spam_rows()))
        self.env = {**os.environ, "FTKIT_HOME": str(self.store.root),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.peer = subprocess.Popen([sys.executable, "-c", PEER], env=self.env, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        self.handles: dict[str, FineTuneJob] = {}  # this process's handles, which go stale as the peer acts
        self.slow: set[str] = set()
        self.told_cancelled: set[str] = set()
        self.terminal: dict[str, JobStatus] = {}

    # ------------------------------------------------------------------ rules

    @initialize(target=jobs)
    def first_job(self) -> str:
        return self.create(slow_submit=True)

    @rule(target=jobs, slow_submit=st.booleans())
    def create(self, slow_submit: bool) -> str:
        options = {"steps": 3, "seconds_per_step": 0.1, "submit_seconds": 0.3 if slow_submit else 0.0}
        job = FineTuneJob.create(self.spec, backend="fake", options=options, store=self.store, validate=False)
        self.handles[job.id] = job
        if slow_submit:
            self.slow.add(job.id)
        return job.id

    @rule(job_id=jobs, mine=st.sampled_from(ACTIONS), theirs=st.sampled_from(ACTIONS))
    def race(self, job_id: str, mine: str, theirs: str) -> None:
        assert self.peer.stdin is not None and self.peer.stdout is not None
        self.peer.stdin.write(f"{job_id} {theirs}\n")
        self.peer.stdin.flush()
        here = _act(self.handles[job_id], mine)
        there = self.peer.stdout.readline().strip()
        assert there, "the peer process died"
        for action, result in ((mine, here), (theirs, there)):
            if action == "cancel" and result == "cancelled":
                self.told_cancelled.add(job_id)
        if {mine, theirs} == {"start", "cancel"}:
            event(f"start raced cancel: {self._status(job_id).value}")

    # The next two act only on a created job with a slow submit. Which jobs are still created depends on how
    # earlier races went, so it is checked inside the rule: hypothesis needs the draws themselves to replay.
    @rule(job_id=jobs)
    def ctrl_c_during_start(self, job_id: str) -> None:
        if job_id not in self.slow or self._status(job_id) is not JobStatus.CREATED:
            return
        timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
        try:
            timer.start()
            self.handles[job_id].start()  # 0.3 s in submit: the signal lands inside it
            timer.join()
        except KeyboardInterrupt:
            timer.join()
        event(f"ctrl-c in start left {self._status(job_id).value}")

    @rule(job_id=jobs)
    def kill_during_start(self, job_id: str) -> None:
        if job_id not in self.slow or self._status(job_id) is not JobStatus.CREATED:
            return
        starter = subprocess.Popen([sys.executable, "-c", STARTER, job_id], env=self.env,
                                   stderr=subprocess.DEVNULL)
        service = self.store.job_dir(job_id) / "fake-service.json"
        deadline = time.monotonic() + 30
        while not service.is_file() and starter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        starter.send_signal(signal.SIGKILL)
        starter.wait(timeout=30)
        event(f"kill -9 in start left {self._status(job_id).value}")

    # ------------------------------------------------------------------ invariants

    def _status(self, job_id: str) -> JobStatus:
        return self.store.get(job_id).status

    @invariant()
    def cancelled_means_cancelled_everywhere(self) -> None:
        for job_id in self.told_cancelled:
            rec = self.store.get(job_id)
            assert rec.status is JobStatus.CANCELLED, f"{job_id} was told cancelled and is {rec.status.value}"
        for job_id in self.handles:
            rec = self.store.get(job_id)
            service = self.store.job_dir(job_id) / "fake-service.json"
            if rec.status is JobStatus.CANCELLED and service.is_file():
                assert orjson.loads(service.read_bytes())["cancelled"], f"{job_id} cancelled but runs at the service"

    @invariant()
    def terminal_is_final(self) -> None:
        for job_id in self.handles:
            status = self._status(job_id)
            if job_id in self.terminal:
                assert status is self.terminal[job_id], f"{job_id}: {self.terminal[job_id].value} -> {status.value}"
            elif status.is_terminal:
                self.terminal[job_id] = status

    @invariant()
    def validating_only_when_a_start_was_cut_off(self) -> None:
        for job_id in self.handles:
            rec = self.store.get(job_id)
            if rec.status is JobStatus.VALIDATING:
                assert Submitter.model_validate(rec.state["submit"]).gone(job_id) is True, rec.state

    def teardown(self) -> None:
        try:
            self.peer.communicate(timeout=30)
            for job_id in self.handles:
                job = FineTuneJob.get(job_id, store=self.store)
                job._live_options = {"steps": 3, "seconds_per_step": 0.1}  # finish without the slow submit
                if job.status in (JobStatus.CREATED, JobStatus.VALIDATING):
                    job.start()  # an interrupted start is reconciled, never refused
                final = job.wait(timeout=30, poll_interval=0.02)
                assert final.is_terminal
                if job_id in self.told_cancelled:
                    assert final is JobStatus.CANCELLED
        except JobError as e:
            raise AssertionError(f"a job could not be taken to its end: {e}") from e
        finally:
            if self.peer.poll() is None:
                self.peer.kill()


# About 25 s on a shared 2-core machine. No shrinking: with real processes racing, one shrink step is a
# whole run and a failure reproduces only sometimes, so shrinking took over five minutes (measured on main,
# where this finds a cancel that ended "succeeded"); the unshrunk 8-step example is short enough to read.
JobLifecycle.TestCase.settings = settings(
    max_examples=8, stateful_step_count=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobLifecycle = JobLifecycle.TestCase
