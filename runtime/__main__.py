"""``python -m runtime`` is ``mtl-run`` (DDP workers are re-launched the same way)."""

import sys

from runtime.entry import main

sys.exit(main())
