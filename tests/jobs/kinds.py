"""Job kinds that exist only in the test settings: slow, flaky and broken work."""

import time

from apps.jobs.services import TransientJobError


def sleep_run(*, job, progress):
    """Report progress in ``steps`` steps of ``step_seconds`` each."""
    steps = int(job.params.get("steps", 5))
    pause = float(job.params.get("step_seconds", 0.2))
    for step in range(1, steps + 1):
        time.sleep(pause)
        progress(int(100 * step / steps) if step < steps else 99, f"Step {step} of {steps}")
    return {"steps": steps}


def flaky_run(*, job, progress):
    """Fails with a transient error until it has been retried ``fail_times`` times."""
    progress(10, "Trying")
    if job.retries < int(job.params.get("fail_times", 1)):
        raise TransientJobError("upstream busy")
    return {"retries": job.retries}


def broken_run(*, job, progress):
    progress(20, "About to break")
    raise RuntimeError("the input file is corrupt")
