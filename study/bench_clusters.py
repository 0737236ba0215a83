"""Which clustering should pkcl's pseudo-labels come from? `python -m study.bench_clusters`
trains one SimCLR encoder (the features pkcl's first clustering sees after its warm-up) on
a long-tailed train set, then clusters its train features with each method and M and
measures what KCL's positives would get from them (labels read here only to score):

    pair precision  P(same class | same cluster), over ordered pairs of distinct images:
                    the fraction of pkcl's extra positives that are true positives
    tail precision  the same, for anchors of the tail third of the classes (fewest images)
    tail reach      the fraction of tail images whose cluster holds another image of their
                    class (an image without one gets no true extra positive at all)
    sizes           the largest and smallest cluster
    seconds         one clustering, on this machine's device

KCL itself (the labels as clusters) scores 1, 1 and 1; `random` (each image in a
uniformly random cluster) is the floor a clustering must beat.
"""

from __future__ import annotations

import argparse
import time

import torch


def pair_scores(pseudo: torch.Tensor, labels: torch.Tensor, tail: torch.Tensor) -> dict:
    """pseudo, labels: [N]; tail: [N] bool (anchor in a tail class). Scores of the docstring."""
    same_cluster = pseudo[:, None] == pseudo[None, :]
    same_cluster.fill_diagonal_(False)
    same_class = labels[:, None] == labels[None, :]
    hits = (same_cluster & same_class).sum(1).float()
    pairs = same_cluster.sum(1).float()
    return {"pair precision": float(hits.sum() / pairs.sum().clamp(min=1)),
            "tail precision": float(hits[tail].sum() / pairs[tail].sum().clamp(min=1)),
            "tail reach": float((hits[tail] > 0).float().mean())}


def measure(features: torch.Tensor, labels: torch.Tensor, ms: list[int], seed: int = 0) -> list[dict]:
    """One row per (method, M) of the docstring's scores on features [N, D], labels [N]."""
    from trainables.clustering import cluster
    from trainables.config import CLUSTER_METHODS
    counts = torch.bincount(labels)
    present = counts.nonzero().flatten()
    tail_classes = present[counts[present].argsort()][: max(1, len(present) // 3)]
    tail = torch.isin(labels, tail_classes)
    rows = []
    for method in ("random", *CLUSTER_METHODS):
        for m in ms:
            start = time.perf_counter()
            g = torch.Generator().manual_seed(seed)
            pseudo = torch.randint(m, labels.shape, generator=g) if method == "random" else \
                cluster(features, m, method, g)
            seconds = time.perf_counter() - start
            sizes = torch.bincount(pseudo, minlength=m)
            rows.append({"method": method, "M": m, **pair_scores(pseudo, labels, tail),
                         "largest": int(sizes.max()), "smallest": int(sizes.min()), "seconds": seconds})
    return rows


def simclr_features(ratio: float, epochs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train features [n, d] and labels [n] of a SimCLR encoder on shapes at this ratio."""
    from trainables.config import TrialConfig
    from trainables.pretrain import pretrain
    from trainables.probe import extract_features
    from trainables.trial import build_train_set, build_trial_objective, plan_data
    cfg = TrialConfig.from_flat({"loss.name": "simclr", "data.total": 2000, "data.imbalance_ratio": ratio,
                                 "optim.epochs": epochs, "optim.schedule": "constant", "seed": seed})
    torch.manual_seed(seed)
    plan = plan_data(cfg)
    data = build_train_set(plan, torch.device("cpu"))
    gen = torch.Generator().manual_seed(seed)
    objective = build_trial_objective(cfg, plan.splits.pool_x.shape[1:], plan.splits.num_classes,
                                      torch.device("cpu"), gen)
    pretrain(objective, data, cfg, gen)
    images = data.images[data.indices]
    return extract_features(objective.encoder, images, data.mean, data.std), data.labels[data.indices]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.bench_clusters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--epochs", type=int, default=25, help="SimCLR epochs (pkcl's default warm-up)")
    parser.add_argument("--clusters", default="10,50", help="comma-separated M")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    features, labels = simclr_features(args.ratio, args.epochs, args.seed)
    rows = measure(features, labels, [int(m) for m in args.clusters.split(",")], args.seed)
    print(f"SimCLR after {args.epochs} epochs, shapes at ratio {args.ratio:g}, {len(labels)} train images")
    print(" | ".join(rows[0]))
    for row in rows:
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
