"""MuQ-MuLan in plain PyTorch: configs, model parts, checkpoint I/O and the embedding API."""
