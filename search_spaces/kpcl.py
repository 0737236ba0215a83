"""k-positive contrastive learning: k and the temperature."""


def space(trial) -> dict:
    # k = 0 is SimCLR (the cl study); the paper uses k = 6.
    trial.suggest_int("loss.k", 1, 32, log=True)
    trial.suggest_float("loss.temperature", 0.05, 0.5, log=True)
    return {"loss.name": "kcl"}
