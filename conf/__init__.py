"""Hydra configs of `python -m sim.run`, shipped as package data so that a non-editable
install finds them (sim/run.py reads them as ../conf)."""
