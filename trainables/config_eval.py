"""The evaluation's config sections (composed into trainables.config.TrialConfig): the
linear probes, the balancedness and group rules with the kNN monitor, and the selection
study's budgets and strategies."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.checks import LIMITS, check, within


@dataclass(frozen=True)
class ProbeConfig:
    """The linear probes on frozen features.

    protocol "cached" (default): features extracted once without augmentation,
    standardised, Adam at `lr` (trainables.probe). "augmented": the published linear
    evaluation, crop/flip views drawn each epoch, SGD with `momentum` and the learning
    rate multiplied by `decay` at each of `milestones` (epochs, comma-separated), on
    raw features (trainables.probe_augmented). `preset` names a set of these values
    from the literature (trainables.presets.PROBE_PRESETS), resolved into them.
    """
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.01
    weight_decay: float = 1e-4
    balanced_sampling: bool = False   # class-balanced sampling for the long-tailed probe
    protocol: str = "cached"
    momentum: float = 0.9             # augmented only, as the three below
    milestones: str = ""
    decay: float = 0.1
    crop_scale: float = 0.08          # the smallest crop's area fraction (RandomResizedCrop's scale)
    preset: str = ""

    def __post_init__(self):
        within("probe.epochs", self.epochs, 1, LIMITS["epochs"])
        within("probe.batch_size", self.batch_size, 1, LIMITS["probe.batch_size"])
        within("probe.lr", self.lr, 0, LIMITS["probe.lr"], open_low=True)
        within("probe.weight_decay", self.weight_decay, 0, LIMITS["weight_decay"])
        check(self.protocol in ("cached", "augmented"), "probe.protocol", self.protocol, "'cached' or 'augmented'")
        check(0 <= self.momentum < 1, "probe.momentum", self.momentum, "in [0, 1)")
        check(0 < self.decay <= 1, "probe.decay", self.decay, "in (0, 1]")
        check(0 < self.crop_scale <= 1, "probe.crop_scale", self.crop_scale, "in (0, 1]")
        try:
            ok = all(0 < m for m in self.milestone_list)
        except ValueError:
            ok = False
        check(ok, "probe.milestones", self.milestones, "comma-separated epochs >= 1, e.g. '60,80'")
        from trainables.presets import PROBE_PRESETS
        check(self.preset in ("", *PROBE_PRESETS), "probe.preset", self.preset, f"'' or one of {sorted(PROBE_PRESETS)}")

    @property
    def milestone_list(self) -> list[int]:
        return [int(m) for m in self.milestones.split(",") if m.strip()]


@dataclass(frozen=True)
class EvalConfig:
    """Balancedness kernel width, many/medium/few rule, and the kNN monitor."""
    sigma: float = 0.1
    groups: str = "auto"        # many/medium/few: auto (oltr for list datasets, else thirds), trainables.metrics
    knn_k: int = 20
    knn_temperature: float = 0.07

    def __post_init__(self):
        within("eval.sigma", self.sigma, 0, LIMITS["eval.sigma"], open_low=True)
        from trainables.metrics import GROUP_RULES
        check(self.groups in ("auto", *GROUP_RULES), "eval.groups", self.groups, f"one of {('auto', *GROUP_RULES)}")
        within("eval.knn_k", self.knn_k, 1, LIMITS["eval.knn_k"])
        within("eval.knn_temperature", self.knn_temperature, 0, LIMITS["temperature"], open_low=True)


@dataclass(frozen=True)
class SelectConfig:
    """The selection study (trainables.selection): with budgets set, a trial also
    selects `budget` images from its long-tailed train pool (labels hidden) with
    each strategy, and probes on the selected images only. Knobs: probcover's delta,
    spread's multiplier."""
    budgets: str = ""           # comma-separated, e.g. "10,20,40,100"; empty: no selection
    strategies: str = "all"     # comma-separated names, or "all"
    delta: float = 0.6
    multiplier: float = 4.0

    def __post_init__(self):
        try:
            budgets = self.budget_list
        except ValueError:
            budgets = [0]
        check(all(1 <= b <= LIMITS["data.total"] for b in budgets), "select.budgets", self.budgets,
               f"comma-separated integers in [1, {LIMITS['data.total']}], e.g. '10,20,40'")
        from trainables.selection import STRATEGIES
        check(all(n in STRATEGIES for n in self.strategy_list), "select.strategies", self.strategies,
               f"'all' or comma-separated names from {sorted(STRATEGIES)}")
        check(0 < self.delta <= 2, "select.delta", self.delta, "in (0, 2] (distances of unit vectors)")
        within("select.multiplier", self.multiplier, 1, LIMITS["select.multiplier"])

    def keys(self) -> list[str]:
        """The keys that matter only when budgets are set: the strategies and their knobs."""
        from trainables.selection import STRATEGIES
        return ["select.strategies", *sorted({f"select.{k}" for s in STRATEGIES.values() for k in s.knobs})]

    @property
    def budget_list(self) -> list[int]:
        return [int(b) for b in self.budgets.split(",") if b.strip()]

    @property
    def strategy_list(self) -> list[str]:
        from trainables.selection import STRATEGIES
        if self.strategies == "all":
            return list(STRATEGIES)
        return [n.strip() for n in self.strategies.split(",") if n.strip()]
