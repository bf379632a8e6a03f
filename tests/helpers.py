"""Builders of small native maker projects for the compiler tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

BASE: dict[str, Any] = {
    "seed_everything": 0,
    "model": {
        "class_path": "runtime.module.MultiTaskModule",
        "init_args": {
            "model": {
                "class_path": "runtime.model.MultiTaskModel",
                "init_args": {
                    "encoder": [
                        {
                            "class_path": "runtime.encoders.MLPEncoder",
                            "init_args": {"in_features": 64, "hidden_sizes": ["${hidden}"]},
                        }
                    ],
                    "decoders": {},
                },
            },
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": "${lr}"}},
        },
    },
    "data": {
        "class_path": "runtime.data.MultiDatasetDataModule",
        "init_args": {"sample_mode": "random_cycle"},
    },
    "trainer": {"max_epochs": 2, "callbacks": [{"class_path": "cb.A"}]},
}


def dataset(
    tasks: dict[str, int],
    name: str | None = None,
    head: str = "runtime.heads.Cls",
    batch_size: int = 16,
) -> dict[str, Any]:
    """A native dataset config with one classification decoder per task."""
    doc: dict[str, Any] = {
        "model": {
            "init_args": {
                "model": {
                    "init_args": {
                        "decoders": {
                            t: [
                                {
                                    "class_path": head,
                                    "init_args": {"in_features": "${hidden}", "num_outputs": n},
                                }
                            ]
                            for t, n in tasks.items()
                        }
                    }
                },
                "tasks": {
                    t: {
                        "class_path": "runtime.tasks.ClassificationTask",
                        "init_args": {"weight": 1.0},
                    }
                    for t in tasks
                },
            }
        },
        "data": {
            "class_path": "runtime.data.SklearnDataModule",
            "init_args": {
                "dataset": "digits",
                "batch_size": batch_size,
                "path": "relative/data/stays.csv",
            },
        },
    }
    if name:
        doc["name"] = name
    return doc


class Project:
    """Files of a maker project in a temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, content: Any) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text)
        return path

    def standard(self, **maker: Any) -> Path:
        """base + datasets a (task a, 3 labels) and b (tasks b1: 2, b2: 2); returns the maker."""
        defaults = {
            "configs/base.yaml": BASE,
            "configs/datasets/a.yaml": dataset({"a": 3}),
            "configs/datasets/b.yaml": dataset({"b1": 2, "b2": 2}, batch_size=8),
        }
        for name, content in defaults.items():
            if not (self.root / name).exists():  # tests may have written their own
                self.write(name, content)
        doc = {
            "base_path": "../configs/base.yaml",
            "dataset_cfgs": ["../configs/datasets/a.yaml", "../configs/datasets/b.yaml"],
            "substitutions": {"hidden": 32, "lr": 0.01},
        }
        doc.update(maker)
        return self.write("makers/maker.yaml", doc)


def assert_bad_input(result, *needles: str) -> None:
    """Exit 2, a one-paragraph message naming what is wrong, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    out = result.output
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out!r}"


def deny_write(monkeypatch: Any, folder: Path) -> None:
    """Make ``os.access`` report ``folder`` read-only (a chmod does not stop tests run as
    root)."""
    real_access = os.access
    target = folder.resolve()
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: (
            False if mode & os.W_OK and Path(p).resolve() == target else real_access(p, mode, **kw)
        ),
    )
