"""Stage `report`: see transferbench.reporting.report."""

from transferbench.reporting.report import main

if __name__ == "__main__":
    main()
