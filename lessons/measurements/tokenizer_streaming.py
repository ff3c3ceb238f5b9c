"""Peak memory of `Tokenizer.encode_iterable` over text files of 50 MB and 200 MB, against `encode` of a whole file.

The files are IMDB's reviews, repeated to the size, one review a line, written to a temporary
folder and deleted afterwards. Each measurement runs in a fresh process that loads the course's
tokenizer (IMDB, 8,192 ids, uncased), notes its peak resident memory (ru_maxrss), then
encodes the file: streamed line by line, or read whole and encoded at once. The ids are
hashed as they come, so the streamed ids can be checked against the whole file's.

    python lessons/measurements/tokenizer_streaming.py            # about a minute on the 2-core CPU
    python lessons/measurements/tokenizer_streaming.py --table    # the table again, from the JSON below

Writes lessons/measurements/tokenizer_streaming.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

from minilm import Tokenizer
from minilm.data import load_corpus

RESULTS = Path(__file__).with_suffix(".json")
SIZES_MB = (50, 200)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(path: str, how: str) -> dict:
    """Encode `path` one way in this process; report memory, time, token count and the ids' hash."""
    tok = Tokenizer.for_corpus("imdb", 8192)
    tok.encode("warm up: the tokenizer's tables are built")
    before = peak_mb()
    digest, n_ids = hashlib.sha256(), 0
    start = time.perf_counter()
    if how == "stream":
        batch = array("I")
        with open(path, encoding="utf-8") as f:
            for i in tok.encode_iterable(f):
                batch.append(i)
                if len(batch) == 1 << 16:
                    digest.update(batch.tobytes())
                    n_ids += len(batch)
                    batch = array("I")
        digest.update(batch.tobytes())
        n_ids += len(batch)
    else:
        ids = tok.encode(Path(path).read_text(encoding="utf-8"))
        digest.update(array("I", ids).tobytes())
        n_ids = len(ids)
    return {"how": how, "bytes": Path(path).stat().st_size, "ids": n_ids, "sha256": digest.hexdigest(),
            "seconds": time.perf_counter() - start, "peak_mb_before": before, "peak_mb": peak_mb()}


def write_file(path: Path, mb: int, docs: list[str]) -> None:
    target, written = mb * 1_000_000, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            for doc in docs:
                line = doc.replace("\n", " ") + "\n"
                f.write(line)
                written += len(line.encode("utf-8"))
                if written >= target:
                    break


def measure() -> list[dict]:
    docs = load_corpus("imdb")
    Tokenizer.for_corpus("imdb", 8192)  # trained once and cached, before any process is timed
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in SIZES_MB:
            path = Path(tmp) / f"imdb-{mb}mb.txt"
            write_file(path, mb, docs)
            for how in ("stream", "whole") if mb == SIZES_MB[0] else ("stream",):
                done = subprocess.run([sys.executable, __file__, "--child", str(path), how],
                                      capture_output=True, text=True, check=True)
                row = {"file_mb": mb, **json.loads(done.stdout.splitlines()[-1])}
                rows.append(row)
                print(f"  {mb} MB, {how}: peak {row['peak_mb']:.0f} MB in {row['seconds']:.0f} s", flush=True)
            path.unlink()
    meta = {"machine": f"{platform.machine()}, Python {platform.python_version()}", "date": time.strftime("%Y-%m-%d")}
    RESULTS.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| file | how | ids | peak RSS before | peak RSS | growth | time |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        how = "encode_iterable(open(file))" if r["how"] == "stream" else "encode(file.read())"
        lines.append(f"| {r['bytes'] / 1e6:.0f} MB | `{how}` | {r['ids']:,} | {r['peak_mb_before']:.1f} MB | "
                     f"{r['peak_mb']:.1f} MB | {r['peak_mb'] - r['peak_mb_before']:+.1f} MB | {r['seconds']:.0f} s |")
    small = [r for r in rows if r["file_mb"] == SIZES_MB[0]]
    same = len({r["sha256"] for r in small}) == 1 and len({r["ids"] for r in small}) == 1
    lines.append(f"\nStreamed ids equal the whole file's ({SIZES_MB[0]} MB, sha256 of the ids): {same}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="store_true", help="print the table from the saved JSON, run nothing")
    parser.add_argument("--child", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    rows = json.loads(RESULTS.read_text())["rows"] if args.table else measure()
    print(table(rows))


if __name__ == "__main__":
    main()
