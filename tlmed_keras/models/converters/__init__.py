"""Weight converters from other frameworks' checkpoints to Keras models.

- ``torch_pickle``: a safe, torch-free reader of ``torch.save`` files.
- ``state_dict``: the one engine: reads a checkpoint, checks every key and shape, assigns
  all or nothing (``StateDictMismatchError``).
- ``torchvision``: key naming of torchvision checkpoints (Keras layers named after modules).
- ``huggingface``: key naming of Hugging Face checkpoints (BEiT).
"""
