"""``python -m mrvae ...`` runs the command line; data-parallel training goes through torchrun:
``torchrun --nproc_per_node N -m mrvae train --config ...``."""

from mrvae.apps.cli import app

app(prog_name="mrvae")
