"""Typer option declarations reused across subcommands."""

from __future__ import annotations

import typer

Out = typer.Option(..., "--out", "-o", help="Run directory to create.")
OutOptional = typer.Option(None, "--out", "-o", help="Run directory to create.")
Force = typer.Option(False, "--force", help="Replace an existing output.")
Resume = typer.Option(False, "--resume", help="Continue an interrupted run at --out.")
Data = typer.Option("digits", "--data", "-d", help="Dataset: digits, imagefolder:PATH, cifar10:ROOT, synthetic:CxHxW.")
DataOptional = typer.Option(
    None, "--data", "-d", help="Dataset: digits, imagefolder:PATH, cifar10:ROOT, synthetic:CxHxW."
)
Task = typer.Option(None, "--task", help="classification or denoising (default: classification).")
ImageSize = typer.Option(None, "--image-size", help="Resize images to this size (default 32).")
Channels = typer.Option(None, "--channels", help="1 or 3 input channels (default 3).")
Limit = typer.Option(None, "--limit", help="At most this many samples per split.")
Seed = typer.Option(None, "--seed", help="Random seed.")
TrustCode = typer.Option(
    False, "--trust-code", help="Allow model files that run code when loaded (pickles, TorchScript)."
)
NumClasses = typer.Option(None, "--num-classes", help="Classes for a fresh architecture (default: from the data).")
InputShape = typer.Option(None, "--input-shape", help="C,H,W of one input, for fresh architectures without --data.")

Epochs = typer.Option(None, "--epochs", help="Training epochs.")
Lr = typer.Option(None, "--lr", help="Peak learning rate.")
BatchSize = typer.Option(None, "--batch-size", help="Batch size per process.")
Optimizer = typer.Option(None, "--optimizer", help="sgd, adam or adamw.")
Width = typer.Option(None, "--width", help="Width multiplier for builtin architectures.")
MethodConfig = typer.Option(None, "--config", help="YAML file with the method's config fields.")
