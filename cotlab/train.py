"""`python -m cotlab.train STAGE --config recipe.yaml`: what `accelerate launch -m cotlab.train` and
`torchrun -m cotlab.train` run.  The same command as `cotlab train STAGE`, through the same parser,
errors and exit codes (cotlab.cli); the stages themselves are in cotlab.training."""

import sys

from cotlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
