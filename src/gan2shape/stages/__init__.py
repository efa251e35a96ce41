"""The method's stage commands: reconstruct, prior, pretrain-depth, pretrain."""
