"""Thin entry point: ``python cli.py search ...`` is ``autokd search ...``."""

from autokd.cli import main

if __name__ == "__main__":
    main()
