"""End-to-end runs behind the CLI verbs (pretrain, eval, finetune, generate, convert of a CLIP):
they wire data, backbone, task, trainer and evaluation together; each piece knows nothing of
the others. ``assemble`` builds a run's datasets, encoder and task from its config; ``runs``
reads and writes run directories (:class:`convergent.rundir.RunDir`)."""
