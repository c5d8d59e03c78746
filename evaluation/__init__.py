"""Evaluation: metrics (one definition each), the harness, tables and figures."""
