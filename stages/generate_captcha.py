"""Stage `generate_captcha`: see transferbench.data.generation."""

from transferbench.data.generation import main

if __name__ == "__main__":
    main()
