"""Model: the behaviour transformer, its heads, training batches and the Lightning loop.

Serves the `pretrain`, `finetune` and `finetune_scratch` stages.
"""
