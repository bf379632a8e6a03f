"""Key paths into a run config: the one place they are spelled.

A run config is ``model: {class_path, init_args: {model: {class_path, init_args: {encoder,
decoders, ...}}, tasks, ...}}`` and ``data: {class_path, init_args: {...}}``; every module
that walks one builds its key paths from these (``tests/test_single_homes.py`` checks it).
"""

#: the LightningModule's arguments (``MultiTaskModule``: tasks, optimizer, init_from, ...)
MODULE_ARGS = ("model", "init_args")
#: the network's arguments (``MultiTaskModel``: encoder, decoders, trunk, ...)
MODEL_ARGS = (*MODULE_ARGS, "model", "init_args")
DECODERS = (*MODEL_ARGS, "decoders")
TASKS = (*MODULE_ARGS, "tasks")
INIT_FROM = (*MODULE_ARGS, "init_from")
#: the data module's arguments (``MultiDatasetDataModule``: data_modules, batch_sizes, ...)
DATA_ARGS = ("data", "init_args")
