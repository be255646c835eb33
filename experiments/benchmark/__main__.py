"""`python -m experiments.benchmark`: the benchmark as a command (see the package's docstring)."""

from experiments import training
from experiments.benchmark import main

if __name__ == "__main__":
    training.entry_point(main)
