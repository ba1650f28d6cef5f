"""The scheduler: publishes `…Requested` / `…Due` events on a timer while it holds leadership."""

from .deps import SchedulerDeps
from .jobs import JOBS, JobResult, NotLeader
from .leader import Leader
from .service import run_scheduler

__all__ = ["JOBS", "JobResult", "Leader", "NotLeader", "SchedulerDeps", "run_scheduler"]
