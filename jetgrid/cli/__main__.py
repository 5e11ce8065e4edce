"""`python -m jetgrid.cli`: the same command line as the `jetgrid` script (bench/ runs it so)."""

from jetgrid.cli import main

if __name__ == "__main__":  # importing this module (the import test does) runs nothing
    main()
