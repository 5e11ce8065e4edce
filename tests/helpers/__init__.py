"""What tests share: making and submitting jobs, waiting on conditions, reading the log back,
and `jetgrid` processes. Import from here (`from tests.helpers import job, submit, until`);
fixtures stay in the conftest.py files."""

from tests.helpers.collector import Collector, collect
from tests.helpers.jobs import job, job_views, submit
from tests.helpers.procs import JETGRID, run_gateway, spawn_worker, worker_env, write_pools
from tests.helpers.streams import count_subjects, read_stream
from tests.helpers.waiting import held_back, patiently, until

__all__ = [
    "JETGRID",
    "Collector",
    "collect",
    "count_subjects",
    "held_back",
    "job",
    "job_views",
    "patiently",
    "read_stream",
    "run_gateway",
    "spawn_worker",
    "submit",
    "until",
    "worker_env",
    "write_pools",
]
