"""Low-level, torch-free output: atomic files, JSON, ``.npz`` archives and PNG pictures.

Every package that writes files (attacks, backdoor, defenses, detect, harden, report, the CLI) writes through
here, so ``report`` can stay the top-level report pipeline without the lower packages importing it.
"""

from .files import ArrayBlocks, write_atomic, write_json, write_npz, write_npz_members
from .images import example_grid, save_png, to_uint8

__all__ = [
    "ArrayBlocks", "example_grid", "save_png", "to_uint8", "write_atomic", "write_json", "write_npz",
    "write_npz_members",
]
