"""Semi-supervised learning after (or instead of) pretraining: SimCLR v2's fine-tuning from the
first projection-head layer and distillation (Chen et al. 2020b), and self-training with
pseudo-labels and the normalised loss of Zoph et al. 2020 ("Rethinking pre-training and
self-training"). The commands (``fastssl finetune | distill | selftrain``) run the one training
loop of ``fastssl.train`` with a classifier ``Task``: same run directory, checkpoints, resume
and metrics as ``fastssl train``, scored by top-1 on the held-out split."""
