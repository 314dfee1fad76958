"""Pretrained weights from other frameworks.

``tf_rcnn.pretrained.torch_checkpoint`` reads PyTorch checkpoints into NumPy arrays without torch.
Nothing is imported here, so loading a submodule stays cheap.
"""
