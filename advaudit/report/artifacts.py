"""Moved to :mod:`advaudit.attacks.artifacts` (the files an attack run leaves); kept for old imports."""

from ..attacks.artifacts import EXAMPLE_ROWS, example_grid_for_run, save_adversarial, write_npz

__all__ = ["EXAMPLE_ROWS", "example_grid_for_run", "save_adversarial", "write_npz"]
