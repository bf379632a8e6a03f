"""The multi-dataset data module under a real Lightning Trainer: resuming and DDP coverage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import pytest
from data_recording_model import RecordingModule, synthetic_datamodule
from lightning.pytorch.callbacks import ModelCheckpoint

TESTS = Path(__file__).parent


def _fit(model: RecordingModule, data, callbacks=(), ckpt_path: str | None = None) -> None:
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_continues_at_the_exact_next_batch(tmp_path, num_workers: int) -> None:
    reference = RecordingModule()
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    _fit(reference, synthetic_datamodule(num_workers=num_workers), [checkpoints])
    batches = reference.seen["train"]
    per_epoch = len(batches) // 2
    # mid epoch 0, the last batch of epoch 0 (resume = next epoch), mid epoch 1
    for step in (3, per_epoch, per_epoch + 4):
        resumed = RecordingModule()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(resumed, synthetic_datamodule(num_workers=num_workers),
                 ckpt_path=str(next(tmp_path.glob(f"*-step={step}.ckpt"))))  # fmt: skip
        assert resumed.seen["train"] == batches[step:], f"resumed after step {step}"
        assert not [w for w in caught if "not resumable" in str(w.message)]


@pytest.mark.skipif(os.environ.get("MTL_SKIP_DDP") == "1", reason="MTL_SKIP_DDP=1")
def test_ddp_two_ranks_see_every_sample_exactly_once(tmp_path) -> None:
    """Two CPU processes (gloo), refill off: train/val/predict each cover every sample once.
    The worker finds the repository through PYTHONPATH too (a checkout run without an install,
    as benchmarks/gpu_check.sh does), and hides GPUs: the test means CPU."""
    path = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in path if p),
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [sys.executable, str(TESTS / "data_ddp_worker.py"), str(tmp_path), "random_cycle"],
        timeout=240, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    sizes = ranks[0]["sizes"]
    for split in ("train", "val", "predict"):
        steps = [r["seen"][split] for r in ranks]
        assert len(steps[0]) == len(steps[1]) > 0
        assert [s[1] for s in steps[0]] == [s[1] for s in steps[1]]  # same dataset each step
        assert all(ids for rank in steps for _, _, ids in rank)  # no empty batch
        counts = {name: Counter() for name in sizes[split]}
        for rank in steps:
            for _, name, ids in rank:
                counts[name].update(ids)
        for name, n in sizes[split].items():
            assert counts[name] == Counter(range(n)), f"{split}/{name}"
