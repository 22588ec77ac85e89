"""The reference GPT trainer: ``trackkit-train`` (cli.py), the loop (train.py), the model (model.py).

From Python: ``pretrain(PretrainConfig(...))`` (pretrain.py), with the fields of the guide's
``PretrainConfig``; ``python -m reference_trainer`` is ``trackkit-train``.
"""
from .pretrain import PretrainConfig, pretrain

__all__ = ["PretrainConfig", "pretrain"]
