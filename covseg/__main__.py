"""`python -m covseg` is the `covseg` command."""

from covseg.cli import main

if __name__ == "__main__":
    main()
