"""The torch backend and PyTorch adapter (in progress)."""
