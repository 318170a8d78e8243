"""SLOs, capacity search, trial cache, sweeps, reports, plots, and the capsim CLI."""
