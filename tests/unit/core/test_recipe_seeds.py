"""A recipe's seed reaches every step's randomness: top-level seeds, nested training sections, and
the initial weights of fresh architectures; the data split keeps its own seed."""

from compress.recipe import parse_recipe, reseed

RAW = {
    "name": "s",
    "seed": 5,
    "data": {"name": "digits", "image_size": 8},
    "steps": [
        {"name": "t", "technique": "train", "model": "builtin:simple_cnn"},
        {"name": "kd", "technique": "distill", "method": "kd", "model": "builtin:simple_cnn", "teacher": "t"},
        {"name": "p", "technique": "prune", "method": "channel", "model": "t", "params": {"finetune_epochs": 1}},
        {
            "name": "fixed",
            "technique": "distill",
            "method": "kd",
            "model": "builtin:simple_cnn",
            "teacher": "t",
            "params": {"train": {"seed": 42, "epochs": 2}},
        },
    ],
}


def test_the_recipe_seed_fills_nested_training_seeds_unless_a_step_sets_its_own():
    recipe = parse_recipe(RAW)
    cfg = recipe.step_configs
    assert cfg["t"].seed == 5 and cfg["kd"].train.seed == 5 and cfg["p"].finetune.seed == 5
    assert cfg["fixed"].train.seed == 42 and cfg["fixed"].train.epochs == 2
    again = reseed(recipe, 9)
    assert again.seed == 9 and again.seeds == 1 and again.data.seed == recipe.data.seed == 0
    cfg = again.step_configs
    assert cfg["t"].seed == 9 and cfg["kd"].train.seed == 9 and cfg["p"].finetune.seed == 9
    assert cfg["fixed"].train.seed == 42
    assert recipe.step_configs["kd"].train.seed == 5  # the original is untouched


def test_seeds_key_is_kept_out_of_a_single_runs_config():
    assert "seeds" not in parse_recipe(RAW).to_dict()
    assert parse_recipe({**RAW, "seeds": 3}).to_dict()["seeds"] == 3


def test_a_fresh_architecture_starts_from_the_seeds_weights():
    import torch

    from compress.pipeline import load_input

    def weights(seed):
        return next(
            load_input("builtin:simple_cnn", input_shape=(1, 8, 8), num_classes=10, seed=seed).module.parameters()
        )

    assert torch.equal(weights(0), weights(0)) and not torch.equal(weights(0), weights(1))
