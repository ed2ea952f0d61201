"""What every layer shares: user-facing errors, the registry, paths, atomic files, inputs of earlier stages, pools."""
