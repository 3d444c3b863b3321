"""The core every job and the orchestration share: job contract, store, manifests, settings, prompts, predictions, pricing, statistics, model loading."""
