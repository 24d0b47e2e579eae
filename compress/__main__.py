"""`python -m compress ...` (also what `torchrun -m compress ...` runs)."""

from compress.cli.main import main

main()
