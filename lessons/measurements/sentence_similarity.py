"""How alike an encoder's sentence vectors are: mean cosine between 200 rt-polarity test sentences.

    python lessons/measurements/sentence_similarity.py runs/bench-objectives/mlm/final runs/bench-objectives/electra/final

A pretrained encoder whose vectors barely differ from sentence to sentence gives a classifier
almost nothing to separate; this is how the ELECTRA run of `minilm bench objectives` was
found to fine-tune at chance. Prints one line per checkpoint and pooling ([CLS], mean).
"""
import sys

import torch

from minilm.data.collate import pad
from minilm.data.load import load_classification
from minilm.nn.model import Transformer
from minilm.train import model_source


def main(folders):
    texts = load_classification("rt-polarity").test.texts[:200]
    for folder in folders:
        body, tok = model_source.load(model_source.resolve(folder, flag="folder"), Transformer)
        body.eval()
        x = pad([[tok.cls_id, *tok.encode(t)[:60], tok.sep_id] for t in texts], tok.pad_id)  # (N, T)
        mask = (x != tok.pad_id).long()
        with torch.no_grad():
            h = body(x, mask)  # (N, T, D)
        pooled = {"[CLS]": h[:, 0], "mean": (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)}
        for name, v in pooled.items():
            unit = torch.nn.functional.normalize(v, dim=-1)
            cosine = (unit @ unit.T)[~torch.eye(len(v), dtype=torch.bool)].mean()
            print(f"{folder} {name}: mean cosine between sentences {cosine:.3f}, "
                  f"std across sentences {v.std(0).mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
