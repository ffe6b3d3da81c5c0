"""Task relationships: which tasks help each other, which belong together, where to branch.

- ``tag``: inter-task affinity measured during training (TAG), written to
  ``RUN/affinity_tag.json``.
- ``matrices``: an affinity matrix with its task order, and the reader of that file.
- ``rsa``: representation similarity of single-task models, per backbone stage.
- ``grouping``: exact search of task groups (TAG's partition, Standley et al.'s selection).
- ``branching``: the tree of shared stages from layer-wise affinity, under a compute budget.
- ``cost``: parameters and multiply-accumulates, per model and per backbone stage.
- ``heatmap``: a matrix drawn as a PNG (Pillow and numpy).
- ``report`` and ``plan``: what ``polyhead affinity`` and ``polyhead group`` compute and write.
"""
