"""Latency measurement and reporting."""
