"""Deriving a student for a measured budget on a target: the search, its space and its latency cost model."""
