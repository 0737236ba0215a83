"""The checks of a sweep's trial configs, before anything runs: every level x cell (or grid
point) builds a valid TrialConfig, and the knobs fit the data each level draws (KCL's k
below SupCon's bound, pkcl's clusters and the selection budgets within the train set).
ValueError with one line."""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.trial import plan_data


def kcl_limit(class_counts: list[int], batch_size: int) -> int:
    """The smallest k at which batch-mode KCL equals SupCon for the largest class.

    The loop's batch holds b = min(batch_size, n_train) images; an anchor of the largest
    class (n images) shares it with at most m - 1 others of its class, m = min(n, b), so
    it has at most 2m - 2 same-label rows besides its own other view, and any k >= 2m - 2
    takes every one of them (tests/trainables/test_masks.py: KCL with such k equals SupCon)."""
    batch = min(batch_size, sum(class_counts))
    return 2 * min(max(class_counts), batch) - 2


def _check_k(study, cfg: TrialConfig, class_counts: list[int]) -> None:
    """A fixed batch-mode k that reaches kcl_limit is SupCon under another name. (Queue
    mode can hold several keys of one image, so larger k can still matter there; a
    searched k is the searcher's business.) cfg is one variant's (its own loss)."""
    if cfg.loss.name != "kcl" or cfg.loss.mode != "batch" or "loss.k" in study.searched_keys():
        return
    limit = kcl_limit(class_counts, cfg.optim.batch_size)
    if cfg.loss.k > 0 and cfg.loss.k >= limit:
        raise ValueError(f"loss.k={cfg.loss.k} reaches every same-label row of a batch (largest class: "
                         f"{max(class_counts)} train images at imbalance {cfg.data.imbalance_ratio:g}, "
                         f"batch {cfg.optim.batch_size}): KCL would equal SupCon; pick k < {limit}")


def _check_clusters(study, cfg: TrialConfig, class_counts: list[int]) -> None:
    """pkcl cannot cut its train set into more clusters than it has images."""
    searched = study.space is not None and "loss.clusters" in study.ask()[0]
    if cfg.loss.name == "pkcl" and not searched and cfg.loss.clusters > sum(class_counts):
        raise ValueError(f"loss.clusters={cfg.loss.clusters}: more clusters than the {sum(class_counts)} images "
                         f"of the long-tailed train set at imbalance {cfg.data.imbalance_ratio:g}")


def _check_budgets(cfg: TrialConfig, class_counts: list[int]) -> None:
    """A selection budget cannot exceed the long-tailed pool it selects from."""
    pool = sum(class_counts)
    too_big = [b for b in cfg.select.budget_list if b > pool]
    if too_big:
        raise ValueError(f"select.budgets {','.join(map(str, too_big))}: more than the {pool} images of the "
                         f"long-tailed pool at imbalance {cfg.data.imbalance_ratio:g}")


def check_trial_configs(study, base: dict, ratios: list[float], seed: int) -> TrialConfig | None:
    """Every trial's config must be valid at every level (or both ends of the range), in
    every cell or grid point; returns the last one (they share the training length), None
    for no ratios."""
    cfg, variants = None, study.variants()
    for ratio in ratios:
        for cell in variants:
            cfg = TrialConfig.from_flat({**base, **cell, "data.imbalance_ratio": ratio, "seed": seed})
            counts = plan_data(cfg).class_counts
            _check_k(study, cfg, counts)
            _check_clusters(study, cfg, counts)
            _check_budgets(cfg, counts)
    return cfg


def check_validation_set(scheduler: str, cfg: TrialConfig) -> None:
    """ASHA and MO-ASHA rank trials on the kNN monitor, which predicts the validation set."""
    if scheduler != "none" and len(plan_data(cfg).splits.val_y) == 0:
        raise ValueError(f"--scheduler {scheduler} ranks trials on the validation set, and this "
                         f"{cfg.data.dataset} data has none: hold images out of the train pool with "
                         "--set data.val_per_class=N (CIFAR), or give imagelist a val list")
