"""``python -m runtime`` is ``mtl-run`` (DDP workers are re-launched the same way)."""

from runtime.cli import main

main()
