"""The exit codes every mtl-toolkit command keeps (one table, documented in
``docs/error-handling.md``)."""

from __future__ import annotations

OK = 0
#: an internal error (a bug): the traceback is printed
INTERNAL_ERROR = 1
#: bad input or a refusal: one paragraph on stderr, nothing written
BAD_INPUT = 2
#: training stopped on a non-finite (NaN or infinite) loss
NON_FINITE_LOSS = 3
#: Ctrl-C (128 + SIGINT)
INTERRUPTED = 130
#: SIGTERM, e.g. from a scheduler before a kill (128 + SIGTERM)
TERMINATED = 143
