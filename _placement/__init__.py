"""Cython sources of the placement core (compiled by setup.py); use ``leibrix.placement``."""
