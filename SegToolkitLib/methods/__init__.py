"""Segmentation methods: ``classic`` (threshold, region growing, snakes), ``atlas`` (registration and label
propagation) and ``deep`` (trained networks)."""
