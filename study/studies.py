"""The studies `python -m study.sweep STUDY` knows: a search space (or a grid),
a base config, and the budget presets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from search_spaces import ce, cl, kpcl, pkcl, select, supcon
from trainables import names
from trainables.presets import SMOKE


@dataclass(frozen=True)
class Study:
    """One study.

    space: `space(trial) -> dict` searched by Optuna, or None for a grid study.
    grid: config key -> values, every combination run (grid studies only).
    base: flat config every trial starts from (the space's values override it).
    cells: config key -> values (searched studies only), every combination a cell; or
        the list of cells itself (flat configs), where not every combination makes sense.
        Every cell gets an equal share of the trials at every imbalance level, each
        level x cell its own Optuna search; round r of the trials (one per level x cell)
        uses seed + r.
    objectives: what Optuna maximises, if not the --objective/--probe choice.
    question: what the study asks, in a sentence (its MLflow experiment's description).
    confirm: whether the budget's --confirm default applies (study.confirm).
    """
    description: str
    space: Callable | None = None
    grid: dict[str, list] = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    cells: dict[str, list] | list[dict] = field(default_factory=dict)
    objectives: list[str] | None = None
    question: str = ""
    confirm: bool = True        # the budget's --confirm applies (select: its answers pair seeds already)

    def ask(self) -> tuple[set[str], dict]:
        """(keys Optuna samples, constants the space returns), from a throwaway trial."""
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        trial = optuna.create_study().ask()
        constants = self.space(trial)
        return set(trial.params), constants

    def searched_keys(self) -> set[str]:
        """Every config key the sweep sets per trial, whatever the base config says: the
        space's samples and constants (or the grid), the cells, the level and the seed."""
        keys = set(self.grid) if self.space is None else set().union(*self.ask())
        return keys | set().union(*self.cell_configs()) | {"data.imbalance_ratio", "seed"}

    def cell_configs(self) -> list[dict]:
        """The cells: the list given, or every combination of the values ([{}] without cells)."""
        return self.cells if isinstance(self.cells, list) else _combinations(self.cells)

    def variants(self) -> list[dict]:
        """The fixed parts of the trials' configs: the grid's points, or the space's
        constants (e.g. its loss) with each cell."""
        if self.space is None:
            return _combinations(self.grid)
        constants = self.ask()[1]
        return [{**constants, **cell} for cell in self.cell_configs()]


def _combinations(values: dict[str, list]) -> list[dict]:
    """Every combination of the keys' values, as flat configs ([{}] for no keys)."""
    import itertools
    return [dict(zip(values, combo)) for combo in itertools.product(*values.values())]


# Study setting: shapes, a fixed total of 2,000 train images so that the imbalance
# varies at a constant dataset size (the paper's LT series); the pool holds 1,000
# images per class, enough for the head class up to ratio 100.
BASE = {"data.dataset": "shapes", "data.total": 2000}

# The select study's encoders: label-free (simclr; pkcl with as many clusters as shapes has
# classes, and with 5x as many, its default) and label-using references (kcl, ce).
SELECT_ENCODERS = [{"loss.name": "simclr"}, {"loss.name": "pkcl", "loss.clusters": 10},
                   {"loss.name": "pkcl", "loss.clusters": 50}, {"loss.name": "kcl"}, {"loss.name": "ce"}]

STUDIES = {
    "kpcl": Study("k-positive contrastive learning: k, temperature, imbalance ratio", kpcl.space, base=BASE,
                  question="Which k and temperature give k-positive contrastive learning (KCL) a feature space "
                  "that is both discriminative (top-1) and balanced (p(V)) at each imbalance level?"),
    "pkcl": Study("pseudo-label KCL (no labels): k, temperature, clusters M, imbalance ratio", pkcl.space,
                  base=BASE, question="Can k-positive contrastive learning balance a feature space without labels, "
                  "drawing its positives from clusters of the encoder's own features, and with which k, "
                  "temperature and number of clusters?"),
    "cl": Study("SimCLR-style contrastive learning: temperature, imbalance ratio", cl.space, base=BASE,
                question="Does label-free contrastive learning (SimCLR) keep its feature space balanced as "
                "the train set grows more imbalanced, and at which temperature?"),
    "supcon": Study("supervised contrastive learning: temperature, imbalance ratio", supcon.space, base=BASE,
                    question="How discriminative and how balanced is supervised contrastive learning's "
                    "feature space at each imbalance level, and at which temperature?"),
    "ce": Study("cross-entropy: learning rate, weight decay, imbalance ratio", ce.space, base=BASE,
                question="How balanced is a cross-entropy encoder's feature space at each imbalance level, "
                "tuned for learning rate and weight decay (the paper's baseline)?"),
    "select": Study("budgeted selection of images to label: encoders (simclr, pkcl at M = 10 and 50 clusters; "
                    "kcl and ce as label-using references) x imbalance levels x seeds, every strategy at "
                    "every budget; Optuna tunes probcover's delta and spread's multiplier", select.space,
                    base={**BASE, "select.budgets": "10,20,40,100"}, cells=SELECT_ENCODERS,
                    objectives=[names.select_objective("probcover", names.TOP1),
                                names.select_objective("spread", names.TOP1)],
                    question="With a labelling budget and an unknown number of classes, which images should "
                    "be labelled, and does a label-free encoder's feature space pick a set as balanced and as "
                    "useful as label-using encoders do?", confirm=False),
    "fig2": Study("the paper's Figure 2 as a grid: losses (ce, simclr, kcl, pkcl) x imbalance levels x seeds",
                  grid={"loss.name": ["ce", "simclr", "kcl", "pkcl"]}, base=BASE,
                  question="The paper's Figure 2: as the imbalance grows, does contrastive learning's feature "
                  "space stay more balanced than cross-entropy's, does KCL keep both, and does its label-free "
                  "form (pkcl) get closer to KCL than SimCLR?"),
}


@dataclass(frozen=True)
class Budget:
    """How much a sweep runs: trials (per level x levels, or grid repeats), epochs, and
    the trial-level config the preset adds."""
    num_samples: int
    seeds: int
    config: dict
    confirm: int = 0          # new seeds per frontier member after a search (study.confirm)


def budget(smoke: bool, gpu: bool) -> Budget:
    """The preset for this machine.

    smoke: tiny trials that exercise every code path in seconds.
    CPU:   50 epochs at a constant learning rate, chosen so that KCL reaches 90% of its
           plateau on the built-in data (measured: 0.94; docs/results.md, "The CPU budget");
           SimCLR does not at this length. Grids on 3 seeds, searches confirmed on 3.
    GPU:   training lengths from the literature for the CIFAR-style ResNet-18.
    """
    if smoke:
        return Budget(num_samples=4, seeds=1, config={**SMOKE, "data.total": None})
    if gpu:
        return Budget(num_samples=24, seeds=3, config={"model.arch": "resnet18", "optim.epochs": 200,
                                                       "optim.batch_size": 256}, confirm=3)
    # Measured (commit 825c69d, KCL, ratio 10): after 50 epochs at lr 0.05 the validation kNN
    # accuracy is 0.94 of KCL's plateau at a constant rate, 0.89 with a cosine decay over the
    # 50 (which cuts the rate before the encoder has learnt), 0.84 with a cosine over 40.
    return Budget(num_samples=18, seeds=3, config={"optim.epochs": 50, "optim.schedule": "constant"}, confirm=3)
