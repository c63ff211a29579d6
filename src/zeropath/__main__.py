"""``python -m zeropath`` entry point."""

from zeropath.cli.main import main

if __name__ == "__main__":
    main()
