"""Where persistkit keeps per-user state, and the environment variables that move it.

``PERSISTKIT_HOME``  root of per-user state (default: the platform's user data folder)
``PERSISTKIT_STORE`` the default store URL or folder (default: ``$PERSISTKIT_HOME/store``)
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The folder holding the signing key, caches and the default store."""
    env = os.environ.get("PERSISTKIT_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("persistkit", appauthor=False))


def default_store_url() -> str:
    """``$PERSISTKIT_STORE`` if set, else the per-user store folder."""
    env = os.environ.get("PERSISTKIT_STORE")
    if env:
        return env
    return str(home() / "store")


def cache_dir() -> Path:
    """Local content-addressed cache for artifacts fetched from remote stores."""
    return home() / "cache"


def keys_dir() -> Path:
    return home() / "keys"
