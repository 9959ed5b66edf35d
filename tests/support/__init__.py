"""Helpers shared by the tests: masters, workers, polling."""
