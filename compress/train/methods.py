"""`train` as a technique: plain supervised training or fine-tuning of a model."""

from __future__ import annotations

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
