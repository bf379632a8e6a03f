"""Weight EMA on its own: the arithmetic (``WeightEMA``) and the callback (``EMAWeights``)
that updates it per optimizer step, evaluates on it and stores it in checkpoints; and
``MultiTaskModule(ema_decay=...)`` wiring that callback in. CPU only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from runtime.ema import TRAINING_WEIGHTS_KEY, EMAWeights, WeightEMA
from runtime.model import MultiTaskModel
from runtime.module import MultiTaskModule
from runtime.tasks import ClassificationTask


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    net[1].bias.requires_grad_(False)  # frozen: not averaged
    return net


def test_weight_ema_follows_the_trainable_weights_and_swaps_in_place():
    net = _net()
    ema = WeightEMA(net, decay=0.5)
    assert ema.names == ["0.weight", "0.bias", "1.weight"]
    weight = net[0].weight
    ema.update()  # the first update takes the weights as they are
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(2.0)
    ema.update()
    ema.swap()
    torch.testing.assert_close(weight.detach(), start + 1.0)
    assert net[0].weight is weight  # same parameter object, values exchanged
    with pytest.raises(RuntimeError, match="swapped in"):
        ema.update()
    ema.swap()
    torch.testing.assert_close(weight.detach(), start + 2.0)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_weight_ema_refuses_a_decay_outside_0_1(decay: float):
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(_net(), decay)


def test_callback_updates_once_per_optimizer_step():
    net = _net()
    callback = EMAWeights(net, decay=0.5, prefix="net.")
    trainer = SimpleNamespace(global_step=4)  # a resumed fit at step 4
    callback.on_train_start(trainer, None)
    callback.on_train_batch_end(trainer, None, None, None, 0)  # accumulating: no step
    assert callback.ema.shadow is None
    trainer.global_step = 5
    callback.on_train_batch_end(trainer, None, None, None, 1)
    first = [s.clone() for s in callback.ema.shadow]
    with torch.no_grad():
        net[0].weight.add_(2.0)
    callback.on_train_batch_end(trainer, None, None, None, 2)  # still step 5: unchanged
    torch.testing.assert_close(callback.ema.shadow, first)


def test_callback_evaluates_on_ema_weights_and_checkpoints_resume_the_training_weights():
    net = _net()
    callback = EMAWeights(net, decay=0.5, prefix="net.")
    weight = net[0].weight
    callback.ema.update()
    with torch.no_grad():
        weight.add_(1.0)
    callback.ema.update()  # shadow = old + 0.5
    training = weight.detach().clone()
    for start, end in (
        (callback.on_validation_start, callback.on_validation_end),
        (callback.on_test_start, callback.on_test_end),
        (callback.on_predict_start, callback.on_predict_end),
    ):
        start(None, None)
        torch.testing.assert_close(weight.detach(), training - 0.5)
        end(None, None)
        torch.testing.assert_close(weight.detach(), training)

    for swapped in (True, False):  # saved during or after evaluation: the same checkpoint
        if swapped:
            callback.on_validation_start(None, None)
        state = {f"net.{k}": v.clone() for k, v in net.state_dict().items()}
        checkpoint = {"state_dict": state}
        callback.on_save_checkpoint(None, None, checkpoint)
        if swapped:
            callback.on_validation_end(None, None)
        torch.testing.assert_close(checkpoint["state_dict"]["net.0.weight"], training - 0.5)
        torch.testing.assert_close(checkpoint[TRAINING_WEIGHTS_KEY]["net.0.weight"], training)
        assert "net.1.bias" not in checkpoint[TRAINING_WEIGHTS_KEY]  # frozen: not averaged

    # what Lightning does on load: the state_dict into the module, then the callback's hook
    fresh = _net()
    fresh.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    restored = EMAWeights(fresh, decay=0.5, prefix="net.")
    restored.on_load_checkpoint(None, None, checkpoint)
    torch.testing.assert_close(fresh[0].weight.detach(), training)
    restored.on_validation_start(None, None)
    torch.testing.assert_close(fresh[0].weight.detach(), training - 0.5)


def test_a_checkpoint_without_training_weights_loads_as_is():
    net = _net()
    before = net[0].weight.detach().clone()
    callback = EMAWeights(net, decay=0.5, prefix="net.")
    callback.on_load_checkpoint(None, None, {"state_dict": {}})
    assert callback.ema.shadow is None
    torch.testing.assert_close(net[0].weight.detach(), before)


def test_module_with_ema_decay_adds_the_callback_every_run():
    model = MultiTaskModel(encoder=[nn.Linear(4, 4)], decoders={"a": [nn.Linear(4, 3)]})
    tasks = {"a": ClassificationTask(num_classes=3)}
    module = MultiTaskModule(model, tasks, ema_decay=0.9)
    first = module.configure_callbacks()
    assert [c for c in first if isinstance(c, EMAWeights)] == [module.ema]
    assert module.configure_callbacks() == first  # fit then test: the same EMA state
    assert module.ema.prefix == "model."
    assert "encoder.0.weight" in module.ema.ema.names
    plain = MultiTaskModule(model, tasks)
    assert plain.ema is None
    assert not any(isinstance(c, EMAWeights) for c in plain.configure_callbacks())
