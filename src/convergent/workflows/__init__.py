"""End-to-end runs behind the CLI verbs (pretrain, eval, finetune): they wire data, backbone,
task, trainer and evaluation together; each piece knows nothing of the others."""
