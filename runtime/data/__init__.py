"""Data side of the runtime: per-dataset modules and the multi-dataset LightningDataModule.

Batches follow the batch contract: ``{"dataset": str, "inputs": Tensor[B, ...],
"targets": {task: Tensor[B, ...]}, "index": LongTensor[B]}`` - one dataset per batch.
"""

from runtime.data.actions import ActionSegmentsDataModule
from runtime.data.base import DatasetModule, TaskTensorDataset, TensorSplitModule
from runtime.data.errors import DataConfigError
from runtime.data.multi import MultiDatasetDataModule
from runtime.data.sampler import SAMPLE_MODES, BatchKey, MultiDatasetBatchSampler
from runtime.data.sensing import SensingDataModule
from runtime.data.sklearn_data import SklearnDataModule
from runtime.data.synthetic import SyntheticDataModule
from runtime.data.tensor_file import TensorFileDataModule, read_tensor_file

__all__ = [
    "SAMPLE_MODES",
    "ActionSegmentsDataModule",
    "BatchKey",
    "DataConfigError",
    "DatasetModule",
    "MultiDatasetBatchSampler",
    "MultiDatasetDataModule",
    "SensingDataModule",
    "SklearnDataModule",
    "SyntheticDataModule",
    "TaskTensorDataset",
    "TensorFileDataModule",
    "TensorSplitModule",
    "read_tensor_file",
]
