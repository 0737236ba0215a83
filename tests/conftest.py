"""Test-session set-up shared by every package's tests.

Ray starts once per session (a real local cluster, 2 CPUs, its own short temp
dir); tests that need it take the `ray_cluster` fixture.
"""

import os
import tempfile

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # A short path: Ray's unix sockets live under it and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()
