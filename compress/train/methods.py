"""`train` as a technique: plain supervised training or fine-tuning of a model."""

from __future__ import annotations

from dataclasses import dataclass

from compress.methods import Context, Result, register_method
from compress.models.model import Model
from compress.train.loop import TrainConfig, train


@register_method("train", "supervised", TrainConfig)
def supervised(model: Model, config: TrainConfig, ctx: Context) -> Result:
    """Train (or fine-tune) on the data's task with its own loss."""
    if model.task != ctx.data.task:
        from compress.errors import DataError

        raise DataError(f"model {model.name} is a {model.task} model but the data is for {ctx.data.task}")
    out = model.copy()
    out.input_shape = tuple(ctx.data.input_shape)
    result = train(out.module, ctx.data, config, checkpoint=ctx.checkpoint("train"), description="train")
    return Result(model=out, metrics={**result.metrics, "epochs": config.epochs})


@dataclass
class AsIsConfig:
    """Takes no settings: the model goes on as it came."""


@register_method("train", "as_is", AsIsConfig, needs_data=False)
def as_is(model: Model, config: AsIsConfig, ctx: Context) -> Result:
    """The model unchanged, so a recipe can export, measure and report the original network (a
    pretrained one, say) as its first variant, the one the others are compared with."""
    return Result(model=model.copy(), metrics={})
