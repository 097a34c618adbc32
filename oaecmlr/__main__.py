"""`python -m oaecmlr`, as `oaecmlr`: what `torchrun -m oaecmlr ...` starts in each worker."""

from oaecmlr.cli.app import main

if __name__ == "__main__":
    main()
