"""Cross-entropy: learning rate and weight decay."""


def space(trial) -> dict:
    trial.suggest_float("optim.lr", 0.01, 0.5, log=True)
    trial.suggest_float("optim.weight_decay", 1e-5, 1e-3, log=True)
    return {"loss.name": "ce"}
