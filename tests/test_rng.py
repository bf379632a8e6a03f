"""RNG states in checkpoints (``runtime.rng``) on their own: the states round-trip through a
``weights_only`` load, and ``RNGResume`` puts the newest checkpoint's states back before the
next training step of a fit, and only then. CPU only."""

from __future__ import annotations

import io
import random
from types import SimpleNamespace

import numpy as np
import torch

from runtime.rng import RNG_KEY, RNGResume, rng_states, set_rng_states


def _draw() -> tuple[float, float, float]:
    return torch.rand(()).item(), float(np.random.rand()), random.random()


def test_states_round_trip_through_a_weights_only_checkpoint():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    buffer = io.BytesIO()
    torch.save({RNG_KEY: rng_states()}, buffer)
    want = _draw()
    buffer.seek(0)
    set_rng_states(torch.load(buffer, weights_only=True)[RNG_KEY])
    assert _draw() == want


def _trainer(fn: str) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(fn=fn))


def test_training_continues_from_the_saved_states():
    callback = RNGResume()
    checkpoint: dict = {}
    callback.on_save_checkpoint(_trainer("fit"), None, checkpoint)
    want = _draw()
    _draw()  # e.g. the sanity check or a new loader iterator, between save and next step
    callback.on_train_batch_start(_trainer("fit"), None, None, 0)
    assert _draw() == want
    callback.on_train_batch_start(_trainer("fit"), None, None, 1)  # once only
    assert _draw() != want

    resumed = RNGResume()
    resumed.on_load_checkpoint(_trainer("fit"), None, checkpoint)
    _draw()
    resumed.on_train_batch_start(_trainer("fit"), None, None, 0)
    assert _draw() == want


def test_outside_fit_the_states_are_saved_but_never_restored():
    callback = RNGResume()
    checkpoint: dict = {}
    callback.on_save_checkpoint(_trainer("validate"), None, checkpoint)
    assert RNG_KEY in checkpoint
    callback.on_load_checkpoint(_trainer("test"), None, checkpoint)
    saved = _draw()  # what restoring the checkpoint's states would draw
    callback.on_train_batch_start(_trainer("fit"), None, None, 0)
    assert _draw() != saved  # nothing was pending: the generators were left alone
