"""covseg.training: phantom synthesis, dataset readers, networks, transfer strategies, training loop,
metrics, experiments, representation analysis and fine-tuning. Needs the `train` extra (torch, MONAI),
except `covseg.training.synthesis`, which needs only numpy and scipy."""
