"""Downstream tasks: classification and named entities, fine-tuning, metrics, the pretrained-versus-scratch grids."""
