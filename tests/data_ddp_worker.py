"""Run by tests/test_data_ddp.py: a 2-process CPU/gloo DDP fit that records samples per rank.

Usage: python tests/data_ddp_worker.py OUT_DIR SAMPLE_MODE. Lightning re-launches this script
for rank 1; each rank writes OUT_DIR/rank{r}.json with the (epoch, dataset, sample ids) of
every train/val/predict batch it saw, plus the split sizes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
from data_recording_model import RecordingModule, synthetic_datamodule


class PredictRecordingModule(RecordingModule):
    def predict_step(self, batch: dict, batch_idx: int) -> None:
        self.seen.setdefault("predict", []).append((0, batch["dataset"], batch["index"].tolist()))


def main(out_dir: str, sample_mode: str) -> None:
    model = PredictRecordingModule()
    data = synthetic_datamodule(sample_mode=sample_mode, refill=False)
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=data)
    trainer.predict(model, datamodule=data, return_predictions=False)
    sizes = {
        split: {name: len(module.dataset_for(split)) for name, module in data.data_modules.items()}
        for split in ("train", "val", "predict")
    }
    record = {"rank": trainer.global_rank, "seen": model.seen, "sizes": sizes}
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
