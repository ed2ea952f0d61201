"""Stage `validate`: see transferbench.data.validation."""

from transferbench.data.validation import main

if __name__ == "__main__":
    main()
