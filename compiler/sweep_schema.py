"""The shape of a maker's ``sweep:`` section (``compiler.sweep`` expands it).

Apart from the expansion, which compiles makers, so that the maker's schema can name it
without importing the compiler's build (no import cycle).
"""

from __future__ import annotations

from typing import Any

_VALUES = {"type": "array", "minItems": 1}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "A study: task groups x a grid of --set values x seeds "
    "(expanded by mtl-make-config --sweep -o studies/NAME).",
    "properties": {
        "groups": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "description": "Explicit groups of dataset names, each trained together.",
        },
        "all": {"type": "boolean", "description": "Every dataset together (the maker's run)."},
        "leave_one_out": {
            "type": "boolean",
            "description": "Every dataset but one, for each dataset.",
        },
        "pairs": {"type": "boolean", "description": "Every pair of datasets."},
        "singles": {
            "type": "boolean",
            "description": "Each dataset alone (the baselines; as --single-task).",
        },
        "set": {
            "type": "object",
            "additionalProperties": _VALUES,
            "description": "--set key or substitution name -> list of values (a grid).",
        },
        "seeds": {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 1,
            "description": "Seeds (seed_everything); each combination runs once per seed.",
        },
    },
}
