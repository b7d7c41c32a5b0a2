"""seqrec: next-behaviour prediction for e-commerce shoppers.

Stages run as `python -m pipeline <stage>` from `dvc.yaml`; see `python -m pipeline --help`.
"""

__version__ = "0.1.0"
