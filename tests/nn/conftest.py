from ._standins import standin_ops  # noqa: F401  (autouse fixture)
