"""ELo's loss-weight search (Piergiovanni et al., CVPR 2020): the unsupervised Zipf-KL fitness
(``fitness``, the layer of ``fastssl.eval``), the proxy runs, the search itself and
``fastssl elo search`` (above the training loop). The method, its tasks and distillation are
``fastssl.methods.elo``.
"""
