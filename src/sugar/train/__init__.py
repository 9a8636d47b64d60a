"""Training (one concept per file):

- :mod:`sugar.train.loop` -- ``train()``, the one loop (L_g + alpha * L_d), exact resume;
- :mod:`sugar.train.run` -- run-directory support (files, model, device, schedule, batches);
- :mod:`sugar.train.objective` -- the losses of one micro-batch and the projector they train;
- :mod:`sugar.train.checkpoint` -- atomic, complete checkpoints;
- :mod:`sugar.train.distributed` -- data parallelism equal to one process;
- :mod:`sugar.train.diagnostics` -- ``sugar targets inspect``.

Training views live with the data (:mod:`sugar.data.views`), the teachers and their head
training in :mod:`sugar.teachers`.
"""
