"""``python -m runtime`` is ``mtl-run`` (DDP workers are re-launched the same way)."""

import sys

from runtime.cli import main

sys.exit(main())
