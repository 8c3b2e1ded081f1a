"""Workload generators, image builders and importers, trace recording and replay."""
