"""Observe which globals real fitted models pickle, to (re)build persistkit's allow-list.

Fits every scikit-learn estimator on small random data, pickles it with plain pickle
(protocols 0, 2 and 5) and joblib, saves a few torch modules with torch.save, and prints every
``(module, qualname)`` the streams import, with the estimators that needed each. The result is
*reviewed by a person* and pasted into ``src/persistkit/safety/allowlist.py``; this script is
never run at load time.

    .venv/bin/python tools/observe_allowlist.py > /tmp/observed.txt
"""

from __future__ import annotations

import io
import pickle
import sys
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from persistkit.safety.pickle_audit import audit_pickle


def fitted_estimators() -> list[tuple[str, Any]]:
    from sklearn.utils import all_estimators
    from sklearn.utils._test_common.instance_generator import _construct_instances

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(60, 5)))
    y_class = rng.integers(0, 3, size=60)
    y_reg = rng.normal(size=60)
    fitted = []
    for name, cls in all_estimators():
        try:
            instances = list(_construct_instances(cls))[:1]
        except Exception:
            continue
        for est in instances:
            for args in ((X, y_class), (X, y_reg), (X,)):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        est.fit(*args)
                except Exception:
                    continue
                fitted.append((name, est))
                break
    return fitted


def torch_modules() -> list[tuple[str, Any]]:
    import torch
    from torch import nn

    return [
        ("torch.Linear", nn.Linear(3, 2)),
        (
            "torch.Sequential",
            nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Dropout(0.1), nn.LazyLinear(2) if False else nn.Linear(2, 2),
                nn.LayerNorm(2), nn.GELU(), nn.Tanh(), nn.Sigmoid(), nn.Softmax(dim=-1),
            ),
        ),
        ("torch.Embedding+LSTM", nn.ModuleList([nn.Embedding(5, 3), nn.LSTM(3, 4), nn.GRU(3, 4)])),
        ("torch.tensor", {"t": torch.ones(2, dtype=torch.float16), "i": torch.arange(3)}),
    ]


def torch_globals(obj: Any) -> list[tuple[str, str]]:
    import zipfile

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
        return audit_pickle(zf.read(name), persistent=True).globals


def main() -> None:
    import joblib

    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    estimators = fitted_estimators()
    for name, est in estimators:
        streams = [pickle.dumps(est, protocol=p) for p in (0, 2, 5)]
        for data in streams:
            for pair in audit_pickle(data).globals:
                seen[pair].add(name)
        buffer = io.BytesIO()
        joblib.dump(est, buffer)
        for pair in audit_pickle(buffer.getvalue(), joblib=True).globals:
            seen[pair].add(name)
    try:
        for name, module in torch_modules():
            for pair in torch_globals(module):
                seen[pair].add(name)
    except ImportError:
        pass
    print(f"# {len(estimators)} fitted scikit-learn estimators observed", file=sys.stderr)
    for pair in sorted(seen):
        users = sorted(seen[pair])
        print(f"    {pair!r},  # {len(users)}: {', '.join(users[:3])}")


if __name__ == "__main__":
    main()
