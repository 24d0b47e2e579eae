"""Property: the recipe loader gives a valid recipe or one bounded line of RecipeError, never anything else."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from compress.errors import CompressError
from compress.recipe import Recipe, parse_recipe

KEYS = [
    "name", "steps", "data", "seed", "export", "bench", "report", "technique", "method", "model", "teacher",
    "params", "variant", "epochs", "lr", "ratio", "batch_size", "image_size", "limit", "baseline", "opset",
    "model_kwargs", "step_configs", "bits", "train", "finetune",
]  # fmt: skip
VALUES = ["train", "prune", "quantize", "distill", "channel", "int8", "digits", "builtin:simple_cnn", "teacher"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(VALUES),
    st.text(max_size=30),
)
data = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=40,
)
step = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b", "teacher"]), "technique": st.sampled_from(VALUES[:4])},
    optional={"method": st.sampled_from(VALUES[4:6]), "model": st.sampled_from(VALUES[7:]), "params": data},
)
recipes = st.one_of(
    data,
    st.fixed_dictionaries(
        {"name": st.text(max_size=10), "steps": st.lists(step, max_size=4)},
        optional={"data": data, "seed": scalars, "bench": data, "export": data, "report": data},
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
@example({"\n": None})  # a key with a line break was echoed as is: a two-line message
def test_recipe_loader_never_raises_anything_but_a_bounded_recipe_error(raw):
    try:
        recipe = parse_recipe(raw, where="fuzz.yaml")
    except CompressError as e:
        message = str(e)
        assert message.startswith("fuzz.yaml") and "\n" not in message and len(message) < 600, message
        return
    assert isinstance(recipe, Recipe) and recipe.steps
