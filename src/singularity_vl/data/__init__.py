"""Data: frame sampling, video/image reading, transforms, annotations, tokenisation, datasets."""
