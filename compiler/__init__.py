"""mtl-toolkit compiler: turns a maker config into one standalone run config.

Pure Python (pyyaml, deepmerge, click); importing it never imports torch, lightning or
jsonargparse, so it runs on a login node or a laptop.
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one place the version is written is pyproject.toml
    __version__ = version("mtl-toolkit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "unknown"
