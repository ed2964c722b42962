"""Weight converters from other frameworks' checkpoints to Keras models.

- ``torch_pickle``: a safe, torch-free reader of ``torch.save`` files.
- ``torchvision``: maps torchvision state dicts onto Keras layers (and builds the
  torchvision-faithful MobileNetV2).
- ``huggingface``: Hugging Face checkpoints (BEiT).
"""
