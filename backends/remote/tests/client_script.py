"""A client process for the leak tests: creates and starts a remote job, then is killed by the test."""

from __future__ import annotations

import json
import sys

from ftkit import FineTuneJob, JobSpec


def main() -> None:
    data_file, options_json = sys.argv[1], sys.argv[2]
    spec = JobSpec(task="classification", train=data_file, labels=["ham", "spam"])
    job = FineTuneJob.create(spec, backend="remote", options=json.loads(options_json))
    print(job.id, flush=True)
    job.start()
    job.wait(poll_interval=0.2)


if __name__ == "__main__":
    main()
