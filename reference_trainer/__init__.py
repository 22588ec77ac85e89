"""The reference GPT trainer: ``trackkit-train`` (cli.py), the loop (train.py), the model (model.py)."""
