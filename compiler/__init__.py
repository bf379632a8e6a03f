"""mtl-toolkit compiler: turns a maker config into one standalone run config.

Pure Python (pyyaml, deepmerge, click); importing it never imports torch, lightning or
jsonargparse, so it runs on a login node or a laptop.
"""

__version__ = "0.1.0"
