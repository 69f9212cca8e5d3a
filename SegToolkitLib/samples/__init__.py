"""Built-in sample data: a synthetic CT phantom with known truth, and a loader for public data sets."""
