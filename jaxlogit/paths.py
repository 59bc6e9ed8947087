"""Where jaxlogit reads data and keeps its cached artifacts.

Artifacts (trained backbones, logit stores, correctors) live under the cache root,
``$JAXLOGIT_CACHE`` or ``~/.cache/jaxlogit``, each in a folder named by its configuration.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib


def cache_root(override: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache root: ``override``, else ``$JAXLOGIT_CACHE``, else ``~/.cache/jaxlogit``."""
    if override is not None:
        return pathlib.Path(override).expanduser()
    env = os.environ.get("JAXLOGIT_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path("~/.cache/jaxlogit").expanduser()


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-serialisable configuration (10 hex digits)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def artifact_dir(kind: str, name: str, config: dict, root: str | os.PathLike | None = None) -> pathlib.Path:
    """``<cache>/<kind>/<name>-<hash(config)>``: the folder of one cached artifact."""
    return cache_root(root) / kind / f"{name}-{config_hash(config)}"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``: readers see the old
    file or the whole new one, never half of it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
