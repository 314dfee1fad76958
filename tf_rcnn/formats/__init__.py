"""File formats of other frameworks, read with NumPy only (no TensorFlow, no torch).

``torch_checkpoint`` reads PyTorch checkpoints (``.pth`` zip or legacy, ``.safetensors``,
``.npz``). Nothing is imported here, so a module can also be loaded by its file path.
"""
