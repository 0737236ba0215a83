"""The selection study: the strategies' own knobs (probcover's delta, spread's
multiplier), over the ranges trainables.selection declares."""

from trainables.selection import STRATEGIES


def space(trial) -> dict:
    for strategy in STRATEGIES.values():
        for knob, (low, high) in strategy.knobs.items():
            trial.suggest_float(f"select.{knob}", low, high)
    return {}
