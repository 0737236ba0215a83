"""A multi-node Ray cluster on 127.0.0.1, run in its own process for a test module:

    python tests/cluster_host.py DASHBOARD_PORT WORKERS TEMP_DIR

starts a head (no CPUs for trials; the dashboard with its job API on 127.0.0.1) and
WORKERS worker nodes (1 CPU and the custom resource "worker" each), prints one JSON
line {"address", "dashboard", "nodes": [{"node_id", "raylet_socket"}...]}, then reads
commands from stdin, answering each with one JSON line: "trials I" lists worker node I's
processes running a Tune trial with their PYTHONPATH; "kill I" kills node I the way a
machine dies (SIGKILL of its raylet, object store, agents and workers at once); "stop"
(or end of input) shuts the cluster down.

ray.cluster_utils.Cluster rather than `ray start`: on this machine a node that joins
needs RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER unset, and then Ray replaces 127.0.0.1 by the
machine's network address, which the loopback-only head does not listen on. Each node
is still its own set of processes (raylet, object store, workers) with its own ports.
"""

import json
import os
import signal
import sys
from pathlib import Path

from fixtures import free_port                    # run from tests/: its folder is on sys.path
from ray.cluster_utils import Cluster

HEALTH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}   # a dead node: ~3 s


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (from /proc: Linux)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        found[int(stat.parent.name)] = (ppid, cmdline)
    return found


def node_processes(node) -> list[int]:
    """The node's raylet and every process below it (its workers, whose titles Ray
    rewrites, so they are found by parentage)."""
    table = _processes()
    raylets = [pid for pid, (_, cmd) in table.items() if f"--raylet_socket_name={node.raylet_socket_name}" in cmd]
    found, todo = set(), list(raylets)
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += [child for child, (ppid, _) in table.items() if ppid == pid and child not in found]
    return sorted(found)


def trials(node) -> list[dict]:
    """The node's processes running a Tune trial, with the PYTHONPATH Ray gave them."""
    out = []
    for pid in node_processes(node):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                continue
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        paths = [e[len(b"PYTHONPATH="):].decode() for e in environ if e.startswith(b"PYTHONPATH=")]
        out.append({"pid": pid, "pythonpath": paths[0] if paths else ""})
    return out


def kill(cluster: Cluster, node) -> int:
    """SIGKILL every process of the node at once (raylet, object store, agents, workers)."""
    pids = node_processes(node)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cluster.remove_node(node, allow_graceful=False)          # and what is left of it
    return len(pids)


def main() -> None:
    dashboard_port, workers, temp_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port, "_system_config": HEALTH,
        # not Ray's fixed 52365: another Ray on this machine (the test session's) holds it,
        # and a head without its agent takes no jobs
        "dashboard_agent_listen_port": free_port(),
        "temp_dir": temp_dir})
    # each node its own temp dir, as on separate machines: Ray's runtime-env cache of one
    # node must not delete files another node (the head's job driver) uses
    nodes = [cluster.add_node(num_cpus=1, resources={"worker": 1}, node_ip_address="127.0.0.1",
                              temp_dir=f"{temp_dir}/w{i}") for i in range(workers)]
    print(json.dumps({"address": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard_port}",
                      "nodes": [{"node_id": n.node_id, "raylet_socket": n.raylet_socket_name} for n in nodes]}),
          flush=True)
    try:
        for line in sys.stdin:
            command = line.split()
            if command[:1] == ["kill"]:
                print(json.dumps({"killed": kill(cluster, nodes[int(command[1])])}), flush=True)
            elif command[:1] == ["trials"]:
                print(json.dumps(trials(nodes[int(command[1])])), flush=True)
            elif command[:1] == ["stop"]:
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
