"""Stage `fetch`: see transferbench.data.fetching."""

from transferbench.data.fetching import main

if __name__ == "__main__":
    main()
