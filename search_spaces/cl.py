"""SimCLR-style unsupervised contrastive learning: the temperature."""


def space(trial) -> dict:
    trial.suggest_float("loss.temperature", 0.05, 0.5, log=True)
    return {"loss.name": "simclr"}
