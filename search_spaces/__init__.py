"""One module per study: `space(trial) -> dict`, a plain function of an optuna.Trial.

It only calls trial.suggest_* (parameter names are config keys) and returns the
constants that go with them. The imbalance ratio is not here: the sweep adds it
per level, or as one more suggestion in `--imbalance-range` mode.
"""
