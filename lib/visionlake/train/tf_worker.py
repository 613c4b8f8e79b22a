"""The process a ``tf_distribute`` rank runs in: ``python -m visionlake.train.tf_worker WORK_DIR TASK_PID``, started by its
Spark barrier task, which hands it its ``TF_CONFIG`` when it joins (``tf_distribute.await_cluster``). Runs the pickled ``(fn, args)`` in ``WORK_DIR/payload`` and writes the
pickled result to ``WORK_DIR/result``; a fresh process because TensorFlow's collective runtime is set up once per
process and Spark reuses its Python workers."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path


def _exit_with_parent(parent: int, poll_seconds: float = 1.0) -> None:
    """Ends this rank when its barrier task's process (``parent``, as the task gave it: already gone if the task was
    killed while this process started) is gone, e.g. Spark stopped the stage after another rank failed: it would
    otherwise wait forever in an all-reduce for the dead peer."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="visionlake-parent-watch", daemon=True).start()


def main(work_dir: str, parent: int) -> int:
    _exit_with_parent(parent)
    import cloudpickle

    work = Path(work_dir)
    fn, args = cloudpickle.loads((work / "payload").read_bytes())
    try:
        result = fn(*args)
    except BaseException:  # noqa: BLE001 - the launcher's guard has printed the traceback for the driver
        return 1
    (work / "result.partial").write_bytes(cloudpickle.dumps(result))
    (work / "result.partial").rename(work / "result")
    return 0


if __name__ == "__main__":
    status = 1
    try:
        status = main(sys.argv[1], int(sys.argv[2]))
    finally:  # also when writing the result fails
        sys.stdout.flush()
        sys.stderr.flush()
        # TensorFlow's gRPC server cannot be shut down cleanly, and waiting for its threads at exit can hang.
        os._exit(status)
