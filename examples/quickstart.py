"""Quickstart: train a digit classifier, save it, reload it in a NEW process, predict one image.

Run:  python examples/quickstart.py   (uses a throw-away store unless PERSISTKIT_STORE is set)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import persistkit


def main() -> None:
    store = os.environ.get("PERSISTKIT_STORE") or tempfile.mkdtemp(prefix="persistkit-store-")
    os.environ["PERSISTKIT_STORE"] = store

    # 1. train and validate: 8x8 grayscale images of handwritten digits
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    model = LogisticRegression(max_iter=2000).fit(X_train, y_train)
    print(f"validation accuracy: {model.score(X_test, y_test):.3f}")

    # 2. keep it: frozen, serialized, hashed, sealed, versioned in the store
    art = persistkit.save(
        model, "digits", example=X_test[:5], metadata={"accuracy": model.score(X_test, y_test)},
        check=True,
    )
    print(f"saved {art.uri} with backend {art.backend} into {store}")

    # 3. next week, in another process: load it and feed it one new picture
    code = (
        "import persistkit, numpy as np\n"
        "from sklearn.datasets import load_digits\n"
        "image = load_digits().images[-1]\n"
        "print(int(persistkit.predict('digits', image.reshape(1, -1))[0]))\n"
    )
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    print(f"a new process loaded digits and says the last image is a {answer} "
          f"(the label is {load_digits().target[-1]})")


if __name__ == "__main__":
    main()
