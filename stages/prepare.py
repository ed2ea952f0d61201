"""Stage `prepare`: see transferbench.data.preparation."""

from transferbench.data.preparation import main

if __name__ == "__main__":
    main()
