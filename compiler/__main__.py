"""``python -m compiler`` is ``mtl-make-config``."""

from .launch import main

main()
