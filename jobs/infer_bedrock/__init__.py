"""The ``infer-bedrock`` job: few-shot Claude on Amazon Bedrock, batch or on-demand."""
