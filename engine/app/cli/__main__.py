"""`python -m engine.app.cli ...` (what `torchrun -m` and the tests run)."""
from engine.app.cli import main

if __name__ == "__main__":
    main()
