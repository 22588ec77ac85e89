"""``python -m reference_trainer``: the same command as ``trackkit-train`` (the guide's ``train/pretrain.py``)."""
from .cli import main

main(prog_name="trackkit-train")
