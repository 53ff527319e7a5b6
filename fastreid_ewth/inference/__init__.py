"""From a trained model to use: embedding files, embedding, offline evaluation, ONNX export."""
from .embeddings import ARRAYS, Embeddings, load_embeddings, save_embeddings

__all__ = ["ARRAYS", "Embeddings", "load_embeddings", "save_embeddings"]
