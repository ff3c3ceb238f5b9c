"""Text to batches: cleaning, named and local data sets, tokenizers (BPE, WordPiece), corpora, masking, collation.

`load_corpus`, `load_classification` and `load_ner` are re-exported here because they are the
public way in (`from minilm.data import load_corpus`); they live in `minilm.data.load`.
"""
from minilm.data.load import load_classification, load_corpus, load_ner

__all__ = ["load_classification", "load_corpus", "load_ner"]
