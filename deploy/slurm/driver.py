#!/usr/bin/env python3
"""Run ``daskem fit`` on Dask workers that SLURM starts as batch jobs (dask-jobqueue).

    python driver.py DATA [--jobs N] [--shared DIR] [--config jobqueue.yaml] [-- daskem fit options]
    python driver.py DATA --dry-run      # print the worker job script and the fit command

The driver runs inside the batch job of ``fit.sbatch``. It starts the Dask scheduler in
this process with ``SLURMCluster``, configured from the ``jobqueue.yaml`` next to this
file, keeps N worker jobs, runs ``daskem fit DATA --scheduler ... --checkpoint
SHARED/run.zarr`` and cancels the worker jobs (scancel) on exit.

The logic is in ``deploy/jobqueue_driver.py``, one directory up: keep the ``deploy/``
tree together.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # deploy/, which holds jobqueue_driver.py
from jobqueue_driver import bind, daskem_command, fit_command, run_fit  # noqa: F401 (module API)

# SYSTEM: the section of jobqueue.yaml, the dask-jobqueue config name and module (<SYSTEM>Cluster).
SYSTEM, DEFAULT_CONFIG = "slurm", Path(__file__).resolve().parent / "jobqueue.yaml"
load_config, jobqueue_config, make_cluster, worker_job_script, parse_args, main = bind(SYSTEM, DEFAULT_CONFIG)

if __name__ == "__main__":
    raise SystemExit(main())
