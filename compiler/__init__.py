"""mtl-toolkit compiler: turns a maker config into one standalone run config.

Pure Python (pyyaml, deepmerge, click); importing it never imports torch, lightning or
jsonargparse, so it runs on a login node or a laptop.
"""

from compiler._version import __version__

__all__ = ["__version__"]
