"""Named-entity recognition: token classification on CoNLL-2003, scored by entities.

What you will learn:
- NER as tagging every word (IOB2: B-PER starts a person, I-PER continues it, O is outside);
- first-sub-token alignment: a word split into several tokens gets its label on the first
  piece only, and the other pieces are ignored by the loss and by the scorer;
- why the field scores entities, not tokens: a model that says "O" everywhere is right on
  most words and finds no entity at all;
- the entity-level report (precision, recall, F1 per type, conlleval convention), and what
  pretraining adds over the same model trained from scratch.

Run: python lessons/07_ner.py [--quick | --full | --smoke]
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt

from minilm.train import model_source
from minilm.data.collate import token_classification_batch
from minilm.data.load import load_ner
from minilm.downstream.finetuning import FinetuneConfig, run_finetune
from minilm.course.lesson import pretrained_checkpoint, start
from minilm.downstream.metrics import entity_scores


def main(argv=None):
    lesson = start(__file__, argv)
    data = section_1_data(lesson)
    checkpoint, where = section_2_subtokens(lesson, data)
    rows, train_size = section_3_finetuning(lesson, data, checkpoint, where)
    section_4_report(lesson, rows, train_size)
    lesson.finish()


def section_1_data(lesson):
    """CoNLL-2003 in IOB2, and what an all-O tagger scores per word and per entity; returns the data set."""
    lesson.section("1. The data: a tag for every word")
    data = load_ner("conll2003")
    words, tags = data.train.words, data.train.tags
    i = next(k for k, t in enumerate(tags) if len({x[2:] for x in t if x != "O"}) >= 2 and len(t) <= 14)
    print("  " + " ".join(f"{w}/{t}" for w, t in zip(words[i], tags[i])))
    entities = Counter(t[2:] for sent in tags for t in sent if t.startswith("B-"))
    all_tags = [t for sent in data.test.tags for t in sent]
    o_share = all_tags.count("O") / len(all_tags)
    all_o = entity_scores(data.test.tags, [["O"] * len(t) for t in data.test.tags])
    lesson.say(f"""
        CoNLL-2003 (Reuters news) has {len(words):,} training, {len(data.validation.words):,}
        validation and {len(data.test.words):,} test sentences. Training entities by type:
        {dict(entities.most_common())}. Tags are IOB2: B- begins an entity, I- continues it,
        O is outside. {o_share:.1%} of the test words are O, so tagging every word O is
        {o_share:.1%} "accurate" per word, yet finds {all_o['f1']:.0%} of the entities. That is why
        NER is scored per entity: an entity counts only if its type and both boundaries are
        exactly right (the conlleval convention), and precision, recall and F1 are computed
        over entities.""")
    lesson.record("test words tagged O (an all-O tagger's word accuracy)", o_share, "{:.1%}")
    return data


def section_2_subtokens(lesson, data):
    """First-sub-token alignment on one sentence; returns the shared encoder's (checkpoint, description)."""
    lesson.section("2. Words into sub-tokens: label the first piece")
    checkpoint, where = pretrained_checkpoint(lesson)
    tok = model_source.tokenizer_of(model_source.resolve(checkpoint))
    tag_to_id = {t: k for k, t in enumerate(data.tag_names)}
    sentence = ["Schwarzenegger", "visited", "Wolfsburg", "for", "Volkswagen", "."]
    sentence_tags = ["B-PER", "O", "B-LOC", "O", "B-ORG", "O"]
    batch = token_classification_batch([sentence], [sentence_tags], tok, tag_to_id, max_len=64)
    ids, word_ids = tok.encode_words(sentence)
    labels = batch["labels"][0, 1:len(ids) + 1].tolist()
    print(f"  {'token':>12} | word | label")
    for t, w, lab in zip(ids, word_ids, labels):
        print(f"  {tok.token_str(t).strip():>12} | {w:4d} | {data.tag_names[lab] if lab >= 0 else '-100 (ignored)'}")
    casing = ("This encoder's tokenizer is uncased, so the model cannot use capital letters, a strong hint "
              "for names; cased models do better." if tok.lowercase else
              "This encoder's tokenizer is cased, so capital letters, a strong hint for names, reach the model.")
    lesson.say(f"""
        The tokenizer cuts rare names into pieces: {len(sentence)} words became {len(ids)}
        tokens. Each word's tag goes on its first piece; the others get -100, which the loss
        skips. At prediction time each word takes the tag predicted at its first piece, so
        scores are computed on words, exactly as the gold data is written, and a model's
        score cannot be inflated by long names. {casing}""")
    return checkpoint, where


def section_3_finetuning(lesson, data, checkpoint, where):
    """A TokenClassifier fine-tuned from the shared encoder and from scratch; returns ({init: run row},
    the number of training sentences)."""
    lesson.section("3. Fine-tuning a TokenClassifier: pretrained and from scratch")
    train_size = lesson.pick(smoke=32, quick=1000, full=None)
    epochs = lesson.pick(smoke=1, quick=3, full=5)
    eval_size = lesson.pick(smoke=32, quick=400, full=None)
    lesson.say(f"""
        Starting point: {where}. Each run trains a linear layer over every token's vector
        (and the encoder) for {epochs} epochs on {train_size or len(data.train.words):,} training sentences,
        selects the epoch on validation entity F1 and scores the test set once
        ({eval_size or len(data.test.words):,} sentences).""")
    rows = {}
    for init in ("pretrained", "scratch"):
        out = lesson.out / f"ner-{init}"
        cfg = FinetuneConfig(task="ner", data="conll2003", init=str(checkpoint) if init == "pretrained" else "scratch",
                             arch=str(checkpoint), method="full", seed=lesson.seed, epochs=epochs,
                             train_size=train_size, eval_size=eval_size, lr=5e-4, out=str(out), overwrite=True,
                             progress=False)
        rows[init] = run_finetune(cfg)
        print(f"  [{init}] test entity F1 {rows[init]['test']['f1']:.1%} (precision "
              f"{rows[init]['test']['precision']:.1%}, recall {rows[init]['test']['recall']:.1%}; "
              f"{rows[init]['time_s']:.0f} s)", flush=True)
    return rows, train_size or len(data.train.words)


def section_4_report(lesson, rows: dict, train_size: int) -> None:
    """The pretrained run's entity-level report, per type, against the scratch run."""
    lesson.section("4. The entity-level report")
    print(Path(lesson.out / "ner-pretrained" / "report_test.txt").read_text())
    p, s = rows["pretrained"]["test"], rows["scratch"]["test"]
    ranked = sorted(p["per_type"], key=lambda t: p["per_type"][t]["f1"])
    hardest, easiest = ranked[0], ranked[-1]
    lesson.say(f"""
        Pretrained: entity F1 {p['f1']:.1%}; from scratch: {s['f1']:.1%}
        ({100 * (p['f1'] - s['f1']):+.1f} points). Read the report per type: precision is the
        share of predicted entities that are right, recall the share of true entities found,
        support the number of true entities. With the pretrained start the hardest type is
        {hardest} (F1 {p['per_type'][hardest]['f1']:.1%}) and the easiest {easiest}
        (F1 {p['per_type'][easiest]['f1']:.1%}). One seed each, so the gap has no error bar: rerun
        with another `--seed` to see how far it moves.""")
    lesson.record("test entity F1: pretrained / scratch", f"{p['f1']:.1%} / {s['f1']:.1%} "
                  f"({100 * (p['f1'] - s['f1']):+.1f} points; {train_size} sentences, seed {lesson.seed})",
                  headline=True)
    types = sorted(set(p["per_type"]) | set(s["per_type"]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, (name, r) in enumerate((("pretrained", p), ("scratch", s))):
        ax.bar([x + 0.4 * k for x in range(len(types))], [100 * r["per_type"].get(t, {}).get("f1", 0) for t in types],
               width=0.4, label=f"{name} (overall {100 * r['f1']:.1f})")
    ax.set_xticks([x + 0.2 for x in range(len(types))], types)
    ax.set(ylabel="test entity F1 (%)", title="CoNLL-2003 NER by entity type")
    ax.legend()
    lesson.save_figure(fig, "f1_by_type")


if __name__ == "__main__":
    main()
