"""Post-processing for the switchpoint lm-eval tasks: the same function the hf engine uses.

Each document carries its task's stop strings (``stop``), so one filter serves every task.
"""

from switchpoint.core.prompts import postprocess


def postprocess_responses(resps, docs):
    """lm-eval custom filter: cut each response at the first stop string after the answer starts."""
    return [[postprocess({"generation": {"stop": doc["stop"]}}, r) for r in rs] for rs, doc in zip(resps, docs)]
