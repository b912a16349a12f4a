"""The safetensors backend (in progress)."""
