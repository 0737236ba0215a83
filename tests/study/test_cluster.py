"""A real Ray cluster: `ray start --head` on 127.0.0.1 in its own process group, the
sweep submitted to it with --address, the results checked, the cluster stopped."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fixtures import free_port, start_mlflow_server, wait_for_port

from analysis.results import load_results


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def _descendants(pid: int) -> set[int]:
    """pid and every process below it (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo += children.get(p, [])
    return found


def _listening(pids: set[int]) -> list[str]:
    """The hex local addresses of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            links = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        inodes |= {link[8:-1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:          # 0A: LISTEN
                found.append(cols[1].split(":")[0])
    return found


def test_the_local_ray_of_a_sweep_listens_on_loopback_only(tmp_path):
    # Through the command itself, in a fresh process whose environment lacks the switch:
    # study.sweep.main must set it before Ray is imported (this test session sets it
    # globally, so an in-process test could not catch a regression).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    argv = ["kpcl", "--smoke", "--imbalance-levels", "10", "--num-samples", "2", "--storage", str(tmp_path),
            "--name", "lo"]
    proc = subprocess.Popen([sys.executable, "-m", "study.sweep", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    watchdog = threading.Timer(240, lambda: os.killpg(proc.pid, signal.SIGKILL))   # never hang the suite
    watchdog.start()
    seen: set[str] = set()                    # every address a socket of the sweep listened on
    most = 0                                  # the most sockets listening at one time
    try:
        while proc.poll() is None:
            listening = _listening(_descendants(proc.pid))
            seen.update(listening)
            most = max(most, len(listening))
            time.sleep(0.5)
    finally:
        watchdog.cancel()
    assert proc.returncode == 0
    assert len(load_results(tmp_path / "lo")) == 2
    assert most >= 3                                           # GCS, raylet, workers: the scan sees them
    assert seen <= LOOPBACK, seen


@pytest.mark.slow          # ~55 s; CI joins clusters by address in test_multinode
def test_smoke_sweep_on_a_ray_start_cluster(tmp_path):
    port = free_port()
    # On 127.0.0.1 only: the head with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (see
    # study.sweep.configure_environment, which the sweep applies to a loopback --address).
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("STUDY_FAULTS", None)
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")            # short: Ray's socket paths
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                             f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        assert set(_listening(_descendants(head.pid))) <= LOOPBACK
        sweep = subprocess.run([sys.executable, "-m", "study.sweep", "kpcl", "--smoke", "--num-samples", "2",
                                "--imbalance-levels", "10", "--address", f"127.0.0.1:{port}",
                                "--storage", str(tmp_path), "--name", "c"],
                               env=env, capture_output=True, text=True, timeout=300)
        assert sweep.returncode == 0, sweep.stderr[-2000:]
        df = load_results(tmp_path / "c")
        assert len(df) == 2 and set(df["status"]) == {"ok"} and df["lt/top1"].between(0, 1).all()
        assert (tmp_path / "c" / "report" / "report.md").exists()
    finally:
        os.killpg(head.pid, signal.SIGTERM)                  # --block: the head stops its processes
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_smoke_sweep_logs_to_a_real_mlflow_server_on_loopback(ray_cluster, tmp_path):
    # The many-writers setup of the README: a tracking server (here on 127.0.0.1, its
    # own sqlite store and artifact folder), the sweep's driver its only writer.
    from mlflow.tracking import MlflowClient

    from study.sweep import main
    port = free_port()
    server = start_mlflow_server(tmp_path, port)
    try:
        wait_for_port(port, 90)
        assert set(_listening(_descendants(server.pid))) <= LOOPBACK
        uri = f"http://127.0.0.1:{port}"
        argv = ["kpcl", "--smoke", "--num-samples", "2", "--imbalance-levels", "10", "--mlflow-uri", uri,
                "--storage", str(tmp_path / "runs"), "--name", "m"]
        assert main(argv) == 0
        client = MlflowClient(uri)
        runs = client.search_runs([client.get_experiment_by_name("kpcl").experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        rows = load_results(tmp_path / "runs" / "m")
        assert {r.data.tags["trial_id"] for r in children} == set(rows["trial_id"])
        assert all(r.data.metrics["lt/top1"] == rows.set_index("trial_id").loc[r.data.tags["trial_id"], "lt/top1"]
                   for r in children)
        assert not (tmp_path / "runs" / "mlflow.db").exists()       # nothing went to the default store
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
