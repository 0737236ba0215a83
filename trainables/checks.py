"""Value checks of the config sections: a clear message naming the key and what is allowed.

Every number has an upper bound as well as a lower one: a value that is valid in type
but absurd in size (optim.lr=1e308, model.width=100000) would otherwise be accepted
and only fail, or run for days, after Ray has started. Non-finite floats (nan, inf)
are refused for every key, since a comparison with nan is always false and inf
passes every lower bound.
"""

from __future__ import annotations

import math
import numbers
import reprlib
import typing

import numpy

# Upper bounds: far above any setting in the literature or the presets (in brackets),
# low enough that a typo (an extra zero, 1e308) is refused before it costs hours or memory.
LIMITS = {
    "data.imbalance_ratio": 10_000.0,   # [100, 256 in the long-tail literature]
    "data.total": 10_000_000,           # images (ImageNet: 1.28M); also each select budget
    "data.per_class": 10_000,           # images per class and split (CIFAR-10: 5,000)
    "data.image_size": 512,             # pixels per side [224]
    "model.width": 512,                 # first-stage channels, doubled per stage [16-64]
    "model.proj_dim": 4096,             # [128]
    "loss.k": 65_536, "loss.queue_size": 65_536,   # [6; 4,096, BalFeat's ImageNet queue 65,536]
    "loss.clusters": 100_000,           # pkcl's M [a few times the classes expected: 50 for 10]
    "temperature": 10.0,                # loss and kNN [0.07-0.3]
    "epochs": 5_000,                    # pretraining and probe [200; 100]
    "optim.batch_size": 8_192,          # [256]: the loss holds a (2B)^2 similarity matrix
    "probe.batch_size": 65_536,         # [256] on cached features
    "lr": 10.0, "weight_decay": 1.0,    # optim and probe [0.1; 5e-4]
    "probe.lr": 100.0,                  # [0.01 Adam; SGD on raw features: 0.1 SupContrast, 30 BalFeat/MoCo]
    "eval.sigma": 10.0,                 # [0.1]: accuracy gaps are <= 1, so sigma > 10 weighs every pair ~1
    "eval.knn_k": 1_000,                # [20]
    "select.multiplier": 100.0,         # [4]
    "seed": 2**32 - 1,                  # seeds and data_seed: >= 0, a seed numpy and torch both take
}


# A refused value is echoed shortened: a 400-digit integer or a pasted file would
# otherwise bury the message.
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 80, 40, 80


def check(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{key}={_SHORT.repr(value)} is invalid: allowed {allowed}")


def within(key: str, value, low, high, *, open_low: bool = False, none_ok: bool = False) -> None:
    """low <= value <= high (low < value with open_low); None passes with none_ok.

    Written so that nan fails: every comparison with nan is false."""
    if none_ok and value is None:
        return
    above = value > low if open_low else value >= low
    allowed = f"{'>' if open_low else '>='} {_show(low)} and <= {_show(high)}" + (" or None" if none_ok else "")
    check(above and value <= high, key, value, allowed)


def _show(bound) -> str:
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


def coerce(cls, name: str, value, key: str):
    """Check a value against its field's annotation; ints may arrive as integral floats."""
    hint = typing.get_type_hints(cls)[name]
    options = typing.get_args(hint) or (hint,)
    if value is None:
        check(type(None) in options, key, value, "a value (None is not allowed here)")
        return None
    # numbers.* also admit the numpy scalars that search libraries hand over.
    is_bool = isinstance(value, (bool, numpy.bool_))
    if bool in options:
        check(is_bool, key, value, "true or false")
        return bool(value)
    if int in options:
        ok = not is_bool and (isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and float(value).is_integer()))
        check(ok, key, value, "an integer")
        return int(value)
    if float in options:
        check(isinstance(value, numbers.Real) and not is_bool and _finite(value), key, value, "a finite number")
        return float(value)
    if isinstance(value, numbers.Integral) and not is_bool:
        return str(value)          # --set select.budgets=10 reads 10 as a number; the field is a list
    check(isinstance(value, str), key, value, "a string")
    return value


def _finite(value: numbers.Real) -> bool:
    """nan and inf are not numbers a config can use; an int too large for a float is not finite either."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
