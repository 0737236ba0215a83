"""Pseudo-label KCL (no labels): k, the temperature and the number of clusters M, from a
few to many times the classes one might expect (their number is unknown to the learner).
The warm-up and the re-clustering interval stay fixed (`--set loss.warmup_epochs=N`):
their valid range depends on the training length, which --epochs sets after the space."""


def space(trial) -> dict:
    # k = 0 is SimCLR (the cl study), as in kpcl
    trial.suggest_int("loss.k", 1, 32, log=True)
    trial.suggest_float("loss.temperature", 0.05, 0.5, log=True)
    trial.suggest_int("loss.clusters", 5, 200, log=True)
    return {"loss.name": "pkcl"}
