"""Ask a running `persistkit serve` about picture files with a real Open Inference Protocol
client (tritonclient), sending the files themselves: the server applies the model's
preprocessing, so this client has none.

Run:  python examples/ask_server.py HOST:PORT MODEL PICTURE...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tritonclient.http as triton


def main() -> None:
    url, model, *pictures = sys.argv[1:]
    client = triton.InferenceServerClient(url)
    name = client.get_model_metadata(model)["inputs"][0]["name"]
    files = triton.InferInput(name, [len(pictures)], "BYTES")
    files.set_data_from_numpy(np.array([Path(p).read_bytes() for p in pictures], dtype=object))
    result = client.infer(model, [files])
    labels, scores = result.as_numpy("label"), result.as_numpy("scores")
    for picture, label, row in zip(pictures, labels, scores):
        print(f"{Path(picture).name}: {label.decode()} ({row.max():.2f})")
    client.close()


if __name__ == "__main__":
    main()
