"""`python -m stretto` entry point."""

from stretto.frontends.cli import main

if __name__ == "__main__":
    main()
