"""`make bench`: load benchmark of direct TorchServe against Gatehouse predict (see run.py)."""
