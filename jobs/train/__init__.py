"""The ``train`` job: LoRA adapters for every size and seed, one base-model load."""
