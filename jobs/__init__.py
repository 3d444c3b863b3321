"""switchpoint: when does a LoRA-fine-tuned open model catch up with few-shot Claude, and when is it cheaper?"""

__version__ = "0.1.0"
