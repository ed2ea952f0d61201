"""MLflow: one experiment per dataset, one parent run per pipeline and DVC experiment, one child run per training;
one store for every DVC run."""
