"""Baseline samplers, one module each: deep ensembles, MC dropout, MNF, APD."""
