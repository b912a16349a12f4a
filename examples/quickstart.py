"""Quickstart: train a digit classifier, save it, reload it in a NEW process, predict one image.

Run:  python examples/quickstart.py [OUT_DIR]
It saves into $PERSISTKIT_STORE (a throw-away store if unset) and writes OUT_DIR/one.png, a
picture you can give to `persistkit predict digits one.png` or to the page `persistkit serve`
shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

import persistkit


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="persistkit-"))
    out.mkdir(parents=True, exist_ok=True)
    store = os.environ.setdefault("PERSISTKIT_STORE", str(out / "store"))

    # 1. train and validate on 8x8 grayscale pictures of handwritten digits. scikit-learn keeps
    #    their pixels as 0-16; picture files hold 0-255, so train on what a picture holds.
    digits = load_digits()
    pictures = np.round(digits.images * 255 / 16).astype(np.uint8)  # (1797, 8, 8)
    X = pictures.reshape(len(pictures), -1).astype(np.float64)  # (1797, 64)
    X_train, X_test, y_train, y_test = train_test_split(X, digits.target, random_state=0)
    model = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    accuracy = model.score(X_test, y_test)
    print(f"validation accuracy: {accuracy:.3f}")

    # 2. keep it: frozen, serialized, hashed, sealed and versioned in the store
    art = persistkit.save(model, "digits", example=X_test[:5], metadata={"accuracy": accuracy},
                          check=True)
    print(f"saved {art.uri} (backend {art.backend}) into {store}")

    # 3. a new picture, as a file
    picture = out / "one.png"
    Image.fromarray(pictures[-1]).save(picture)
    print(f"wrote {picture} (label {digits.target[-1]})")

    # 4. next week, in another process: load it and feed it that picture
    code = (
        "import sys, numpy as np, persistkit\n"
        "from PIL import Image\n"
        "pixels = np.asarray(Image.open(sys.argv[1]), dtype=np.float64).reshape(1, -1)\n"
        "print(int(persistkit.predict('digits', pixels)[0]))\n"
    )
    answer = subprocess.run([sys.executable, "-c", code, str(picture)], capture_output=True,
                            text=True, check=True).stdout.strip()
    print(f"a new process loaded digits and says {picture.name} is {with_article(answer)}")


def with_article(word: str) -> str:
    """``"a 3"``, ``"an 8"``: the article a number or word takes when read aloud."""
    vowel_sound = bool(word) and (word[0].lower() in "aeio8" or word in ("11", "18"))
    return f"{'an' if vowel_sound else 'a'} {word}"


if __name__ == "__main__":
    main()
