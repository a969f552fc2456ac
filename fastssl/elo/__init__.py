"""ELo: evolving multi-modal, multi-task video losses (Piergiovanni et al., CVPR 2020).

``tasks`` and ``distill`` are the method's parts (the layer of ``fastssl.methods``: the method is
``fastssl.methods.elo``), ``fitness`` the unsupervised Zipf-KL score (the layer of
``fastssl.eval``), ``search`` and ``commands`` the weight search and ``fastssl elo`` (above the
training loop).
"""
