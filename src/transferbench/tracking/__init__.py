"""MLflow: one experiment per dataset, one run per training, one store for every DVC run."""
