"""The ``infer-local`` job: predictions of the base model, its adapters and few-shot prompts."""
