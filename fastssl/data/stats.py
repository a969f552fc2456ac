"""Image normalisation statistics (ImageNet's, as every paper normalises)."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
