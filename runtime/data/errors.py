"""The one error type the data side raises for bad user input.

It extends the compiler's :class:`ConfigError`, so the command line reports it the same way
(one paragraph naming the file and key path, exit code 2), and ``ValueError``, so plain Python
callers can catch it without knowing about the compiler.
"""

from __future__ import annotations

from compiler.errors import ConfigError


class DataConfigError(ConfigError, ValueError):
    """A data module was configured with something it cannot use."""
