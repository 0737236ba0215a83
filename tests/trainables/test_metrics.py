"""Value tests for trainables/metrics.py: balancedness p(V), per-class accuracy,
class groups and the per-probe summary."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainables.metrics import balancedness, class_groups, per_class_accuracy, summarize


# ----------------------------------------------------------------------------- balancedness

@pytest.mark.parametrize("acc", [[0.5] * 4, [1.0, 1.0], [0.0] * 7, [0.37]])
def test_balancedness_equal_accuracies_is_exactly_one(acc):
    assert balancedness(acc) == 1.0
    assert balancedness(acc, sigma=1.0) == 1.0


def test_balancedness_two_classes_sigma_one():
    expected = (2 + 2 * math.exp(-1)) / 4
    assert balancedness([1.0, 0.0], sigma=1.0) == pytest.approx(expected, rel=1e-12)


def test_balancedness_default_sigma_is_point_one():
    # Without sigma: the kernel exp(-d^2 / 0.1). [0, 1]: two pairs at d = 0, two at d = 1.
    assert balancedness([0.0, 1.0]) == pytest.approx((2 + 2 * math.exp(-1 / 0.1)) / 4, rel=1e-12)
    # [0.2, 0.5]: d^2 = 0.09 -> (1 + e^-0.9) / 2 = 0.70328, not sigma 1's (1 + e^-0.09) / 2 = 0.95697
    assert balancedness([0.2, 0.5]) == pytest.approx((1 + math.exp(-0.9)) / 2, rel=1e-12)
    assert balancedness([0.2, 0.5], sigma=1.0) == pytest.approx((1 + math.exp(-0.09)) / 2, rel=1e-12)


def test_balancedness_three_classes_hand_computed():
    # Gaps 0.2, 0.5, 0.3 -> exp(-0.04/0.1), exp(-0.25/0.1), exp(-0.09/0.1); each off-diagonal pair twice.
    acc = [0.9, 0.7, 0.4]
    expected = (3 + 2 * (math.exp(-0.4) + math.exp(-2.5) + math.exp(-0.9))) / 9
    assert balancedness(acc) == pytest.approx(expected, rel=1e-12)
    assert balancedness(acc, sigma=0.1) == pytest.approx(expected, rel=1e-12)


def test_balancedness_symmetric_in_classes():
    acc = [0.91, 0.2, 0.55, 0.73, 0.05]
    base = balancedness(acc)
    for perm in itertools.permutations(range(len(acc))):
        assert balancedness([acc[i] for i in perm]) == pytest.approx(base, rel=1e-12)


def test_balancedness_range_and_monotone_in_sigma():
    acc = [0.1, 0.5, 0.95]
    values = [balancedness(acc, s) for s in (0.01, 0.1, 1.0, 10.0)]
    assert all(0 < v < 1 for v in values)
    assert values == sorted(values)       # wider kernel -> more balanced-looking


@pytest.mark.parametrize("sigma", [0.0, -0.1, -5])
def test_balancedness_nonpositive_sigma_raises(sigma):
    with pytest.raises(ValueError):
        balancedness([0.5, 0.6], sigma=sigma)


# ----------------------------------------------------------------------------- per-class accuracy

def test_per_class_accuracy_hand_made():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    pred = torch.tensor([0, 1, 0, 0, 1, 0, 2, 1, 1, 0])
    # class 0: 3/4, class 1: 1/2, class 2: 1/3, class 3: 0/1
    acc = per_class_accuracy(pred, target, num_classes=4)
    assert acc == pytest.approx([0.75, 0.5, 1 / 3, 0.0])


def test_per_class_accuracy_absent_class_is_nan():
    target = torch.tensor([0, 0, 2])
    pred = torch.tensor([0, 2, 2])
    acc = per_class_accuracy(pred, target, num_classes=3)
    assert acc[0] == pytest.approx(0.5)
    assert math.isnan(acc[1])
    assert acc[2] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- class groups

def test_class_groups_thirds():
    counts = [50, 10, 30, 5, 20, 1, 40]
    # Ranked: 0(50), 6(40), 2(30) | 4(20), 1(10) | 3(5), 5(1); 7 classes -> sizes 3, 2, 2.
    groups = class_groups(counts, "thirds")
    assert groups == {"many": [0, 2, 6], "medium": [1, 4], "few": [3, 5]}
    assert class_groups(counts) == groups       # "thirds" is the default


def test_class_groups_thirds_partition_sizes():
    for n in range(3, 12):
        counts = list(range(100, 100 - n, -1))
        groups = class_groups(counts, "thirds")
        sizes = [len(groups[g]) for g in ("many", "medium", "few")]
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
        assert sorted(groups["many"] + groups["medium"] + groups["few"]) == list(range(n))
        # head third really holds the largest counts
        assert min(counts[c] for c in groups["many"]) > max(counts[c] for c in groups["few"])


def test_class_groups_imagenet_thresholds():
    counts = [500, 101, 100, 50, 20, 19, 1, 250]
    groups = class_groups(counts, "imagenet")
    assert groups == {"many": [0, 1, 7], "medium": [2, 3, 4], "few": [5, 6]}


@pytest.mark.parametrize("rule, at_100, at_20", [("oltr", "medium", "medium"), ("imagenet", "medium", "medium"),
                                                 ("oltr-master", "many", "few"), ("balfeat", "medium", "few")])
def test_the_literatures_threshold_rules_differ_only_at_exactly_100_and_20(rule, at_100, at_20):
    counts = [500, 101, 100, 99, 21, 20, 19, 1]
    groups = class_groups(counts, rule)
    where = {c: name for name, cls in groups.items() for c in cls}
    assert [where[c] for c in (0, 1, 3, 4, 6, 7)] == ["many", "many", "medium", "medium", "few", "few"]
    assert (where[2], where[5]) == (at_100, at_20)


def test_class_groups_unknown_rule_raises():
    with pytest.raises(ValueError):
        class_groups([1, 2, 3], "quartiles")


# ----------------------------------------------------------------------------- summary

def test_summarize_values():
    acc = [0.9, 0.8, 0.6, 0.5, 0.3, 0.1]
    counts = [100, 80, 60, 40, 20, 10]          # thirds: many {0,1}, medium {2,3}, few {4,5}
    s = summarize(acc, counts)
    mean = sum(acc) / 6                          # 3.2 / 6
    assert s["top1"] == pytest.approx(3.2 / 6)
    assert s["many"] == pytest.approx(0.85)
    assert s["medium"] == pytest.approx(0.55)
    assert s["few"] == pytest.approx(0.2)
    var = sum((a - mean) ** 2 for a in acc) / 6  # population std
    assert s["acc_std"] == pytest.approx(math.sqrt(var))
    assert s["acc_std"] == pytest.approx(float(torch.tensor(acc, dtype=torch.float64).std(unbiased=False)))
    assert s["worst_class_acc"] == 0.1
    assert s["balancedness"] == pytest.approx(balancedness(acc, 0.1))
    assert s["per_class_acc"] == acc


def test_summarize_sigma_and_imagenet_rule():
    acc = [1.0, 0.5, 0.0, 0.25]
    counts = [200, 150, 50, 5]                   # many {0,1}, medium {2}, few {3}
    s = summarize(acc, counts, sigma=1.0, group_rule="imagenet")
    assert s["balancedness"] == pytest.approx(balancedness(acc, 1.0))
    assert s["many"] == pytest.approx(0.75)
    assert s["medium"] == pytest.approx(0.0)
    assert s["few"] == pytest.approx(0.25)
    # A group with no class gets NaN.
    s2 = summarize([0.4, 0.6], [500, 300], group_rule="imagenet")
    assert s2["many"] == pytest.approx(0.5)
    assert math.isnan(s2["medium"]) and math.isnan(s2["few"])


def test_summarize_balanced_probe():
    s = summarize([0.7] * 6, [60, 50, 40, 30, 20, 10])
    assert s["balancedness"] == 1.0
    assert s["acc_std"] == pytest.approx(0.0, abs=1e-12)
    assert s["top1"] == pytest.approx(0.7)
    assert s["many"] == s["medium"] == s["few"] == pytest.approx(0.7)


def test_the_epochs_knn_monitor_reports_the_p_v_of_its_per_class_validation_accuracies():
    from trainables.pretrain import monitor_record
    # 3 classes, 4 validation images each: class 0 all right, class 1 half, class 2 none
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 4)
    pred = torch.tensor([0, 0, 0, 0, 1, 1, 0, 2, 0, 1, 1, 0])
    record = monitor_record(pred, labels, 3, sigma=0.1)
    assert record["knn_per_class_acc"] == [1.0, 0.5, 0.0]
    assert record["knn_acc"] == pytest.approx(6 / 12)
    # p(V) by hand: pairs (0,1) and (1,2) differ by 0.5, (0,2) by 1, each twice, over 9 pairs
    by_hand = (3 + 4 * math.exp(-0.25 / 0.1) + 2 * math.exp(-1 / 0.1)) / 9
    assert record["knn_balancedness"] == pytest.approx(by_hand)
    assert record["knn_balancedness"] == balancedness(record["knn_per_class_acc"], 0.1)
    # a class missing from the validation set is NaN in the list and left out of p(V)
    missing = monitor_record(pred[:8], labels[:8], 3, sigma=0.1)
    assert math.isnan(missing["knn_per_class_acc"][2])
    assert missing["knn_balancedness"] == pytest.approx(balancedness([1.0, 0.5], 0.1))
