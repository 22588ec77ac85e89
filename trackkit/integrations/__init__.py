"""trackkit under the training loops people already use.

- ``trackkit.integrations.hf``: ``TrackkitCallback``, a callback for the Hugging Face ``Trainer``
  (``pip install 'trackkit[hf]'``);
- ``trackkit.integrations.lightning``: ``TrackkitLogger``, a Lightning ``Logger``
  (``pip install 'trackkit[lightning]'``);
- ``trackkit.integrations.accelerate``: ``TrackkitTracker``, a tracker for ``Accelerator(log_with=...)``
  (``pip install 'trackkit[accelerate]'``).

Each module imports its framework; ``import trackkit`` imports none of them.
"""
