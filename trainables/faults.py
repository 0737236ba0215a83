"""Fault injection for the reliability tests: real faults at chosen moments.

When the environment variable STUDY_FAULTS names a JSON file, each trial reads it
at every epoch: a list of rules

    {"when": {"data.imbalance_ratio": 10.0}, "epoch": 1, "fault": "kill", "once": true}

A rule whose `when` items all equal the trial's config values fires after the
report of that epoch or any later one (a trial retried from a later checkpoint
meets it again, unless "once"): "kill" sends SIGKILL to the trial's own worker process (by its
pid), "oom" asks the allocator for 1 PiB (more than a 47-bit address space holds,
so it fails whatever the overcommit policy: a real out-of-memory error from torch),
"raise" raises RuntimeError. With "once", a marker file beside the rules file
records the firing, so the retried trial runs through. Without STUDY_FAULTS
(every real run) this module does nothing.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path


def inject(config: dict, epoch: int, trial_id: str) -> None:
    """Fire the first matching rule for this trial at this epoch, if any."""
    path = os.environ.get("STUDY_FAULTS")
    if not path or not Path(path).exists():
        return
    for number, rule in enumerate(json.loads(Path(path).read_text())):
        if epoch < rule["epoch"] or any(config.get(k) != v for k, v in rule["when"].items()):
            continue
        marker = Path(f"{path}.fired.{number}.{trial_id}")
        if rule.get("once"):
            if marker.exists():
                continue
            marker.touch()
        _fire(rule["fault"])


def _fire(fault: str) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "oom":
        import torch
        torch.empty(2 ** 50, dtype=torch.uint8)       # 1 PiB: the allocator must refuse
    elif fault == "raise":
        raise RuntimeError("injected fault")
    else:
        raise ValueError(f"unknown fault {fault!r} in STUDY_FAULTS")
