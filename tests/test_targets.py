"""lessons/measurements/targets.py: the course's targets, judged from the JSON the lessons keep."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "lessons" / "measurements" / "targets.py"


def _targets():
    spec = importlib.util.spec_from_file_location("targets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(runs: Path, lesson: str, name: str, data) -> None:
    (runs / "lessons" / lesson).mkdir(parents=True, exist_ok=True)
    (runs / "lessons" / lesson / f"{name}.json").write_text(json.dumps(data))


def test_verdicts_are_read_from_the_lessons_json(tmp_path, capsys):
    targets = _targets()
    runs = tmp_path / "runs"
    assert {v for _, v in targets.verdicts(runs)} == {"not measured"}  # nothing ran yet
    _write(runs, "06_sentiment", "ladder", {"sizes": [512], "seeds": [0, 1], "test_accuracy": {
        "shared encoder": {"512": [0.70, 0.72]}, "scratch": {"512": [0.55, 0.57]}, "bag of words": {"512": [0.69, 0.69]},
        "shared + TAPT": {"512": [0.69, 0.70]}, "real BERT probe": {"512": [0.80, 0.82]}}})
    _write(runs, "08_peft", "peft", {"test_accuracy": {"full": [0.70, 0.70], "lora": [0.66, 0.66]},
                                     "trainable_pct": {"full": 100.0, "lora": 2.5}})
    _write(runs, "09_prompts", "zero_shot", {"terrible/great": {"raw": 0.6, "calibrated": 0.66},
                                             "bad/good": {"raw": 0.5, "calibrated": 0.61}})
    _write(runs, "09_prompts", "few_shot", {"prompt_accuracy": {"16": [0.62], "64": [0.60]},
                                            "head_accuracy": {"16": [0.55], "64": [0.65]}})
    got = dict(targets.verdicts(runs))
    assert got["06: shared encoder - scratch at 512 labels >= +12 points and outside 2 std"] == "met (+15.0)"
    assert got["06: shared encoder - scratch at 6,824 labels >= +5 points"] == "not measured"  # --full's size
    assert got["06: shared encoder > bag of words at 512 labels"] == "met (71.0% vs 69.0%)"
    assert got["06: shared + TAPT >= the shared encoder alone, at every size run"] == "MISSED (worst -1.5 points)"
    assert got["06: the real BERT at 512 labels >= 75%"] == "met (81.0%, real BERT probe)"
    assert got["08: LoRA at most 5% of the parameters and within 2 points of full fine-tuning"].startswith("MISSED")
    assert got["09: zero-shot >= 65% (best label words, calibrated)"] == "met (66.0%)"
    assert got["09: the prompt beats the head at 16 labels"] == "met (62.0% vs 55.0%)"
    assert got["09: the prompt beats the head at 64 labels"] == "MISSED (60.0% vs 65.0%)"
    assert targets.main(["--runs", str(runs), "--out", str(tmp_path / "t.md")]) == 0
    assert "| 09: the prompt beats the head at 64 labels | MISSED" in capsys.readouterr().out
    assert (tmp_path / "t.md").read_text().count("\n") == len(got) + 2
