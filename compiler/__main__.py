"""``python -m compiler`` is ``mtl-make-config``."""

from .cli import main

main()
