"""ftkit-remote: LoRA fine-tuning on rented GPUs (vast.ai, RunPod, Lambda, any SSH host), always torn down."""

__version__ = "0.1.0"
