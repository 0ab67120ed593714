"""Precision and recall of the built-in detectors on the labelled corpus (bench/masking/corpus/).

Detector level: every string of every document is scanned (with its JSON key as hint); a hit is a
true positive when it overlaps a labelled value; a labelled value is recalled when hits cover it
entirely. End to end: after ``mask_json``/``mask_text`` no positive may remain and every hard
negative must survive. Run: ``.venv/bin/python bench/masking/evaluate.py``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bastion.masking import MaskingEngine, MaskingSettings
from bastion.masking.scanner import Scanner

CORPUS = Path(__file__).parent / "corpus" / "corpus.jsonl"
CHECKSUM_TYPES = {"card", "iban", "us_ssn", "in_aadhaar", "br_cpf", "cn_resident_id", "uk_nino", "ipv4", "ipv6",
                  "email", "aws_access_key_id", "github_token", "gitlab_token", "slack_token", "stripe_key",
                  "google_api_key", "jwt", "private_key"}


def strings(value: Any, hint: str = "") -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(value, hint)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in strings(v, k.lower())]
    if isinstance(value, list):
        return [s for v in value for s in strings(v, hint)]
    return []


def occurrences(text: str, value: str) -> list[tuple[int, int]]:
    out, at = [], text.find(value)
    while at != -1:
        out.append((at, at + len(value)))
        at = text.find(value, at + 1)
    return out


def main() -> int:
    masker = MaskingEngine(MaskingSettings()).masker(["all"])
    scanner = Scanner(masker.detectors)
    tp: Counter[str] = Counter()  # hits overlapping a labelled value, per detector
    fp: Counter[str] = Counter()  # hits overlapping none, per detector
    found: Counter[str] = Counter()  # labelled values entirely covered by hits, per kind
    total: Counter[str] = Counter()  # labelled values, per kind
    e2e_leaks, negatives_lost, negatives_total = 0, 0, 0
    for line in CORPUS.open():
        doc = json.loads(line)
        payload = doc["payload"]
        labelled = [(kind, value.replace("\n", "\\n") if doc["kind"] == "sql" else value)
                    for kind, value in doc["positives"]]
        for text, hint in strings(payload):
            spans = [(kind, span) for kind, value in labelled for span in occurrences(text, value)]
            hits = scanner.scan(text, hint)
            for hit in hits:
                if any(hit.start < e and hit.end > s for _, (s, e) in spans):
                    tp[hit.detector.name] += 1
                else:
                    fp[hit.detector.name] += 1
                    if "-v" in sys.argv:
                        print("FP", hit.detector.name, repr(text[max(0, hit.start - 20) : hit.end + 20]))
            for kind, (s, e) in spans:
                total[kind] += 1
                covered: set[int] = set()
                for hit in hits:
                    covered.update(range(max(s, hit.start), min(e, hit.end)))
                if len(covered) == e - s:
                    found[kind] += 1
                elif "-v" in sys.argv:
                    print("FN", kind, repr(text[max(0, s - 30) : e + 30]))
        out = masker.mask_json(payload) if isinstance(payload, dict) else masker.mask_text(payload)
        rendered = json.dumps(out.value)
        e2e_leaks += sum(1 for _, value in labelled if json.dumps(value)[1:-1] in rendered)
        negatives_total += len(doc["negatives"])
        negatives_lost += sum(1 for v in doc["negatives"] if v not in rendered)
    print(f"{'detector':24s} {'precision':>9s} {'recall':>7s} {'positives':>9s} {'hits':>6s}")
    for name in sorted(set(total) | set(tp) | set(fp)):
        hit_count = tp[name] + fp[name]
        prec = tp[name] / hit_count if hit_count else float("nan")
        rec = found[name] / total[name] if total[name] else float("nan")
        print(f"{name:24s} {prec:9.3f} {rec:7.3f} {total[name]:9d} {hit_count:6d}")
    all_hits = sum(tp.values()) + sum(fp.values())
    precision = sum(tp.values()) / all_hits
    recall = sum(found.values()) / sum(total.values())
    fixed = [found[k] / total[k] for k in CHECKSUM_TYPES if total[k]]
    print(f"{'overall':24s} {precision:9.3f} {recall:7.3f} {sum(total.values()):9d} {all_hits:6d}")
    print(f"min recall over checksum/fixed-format types: {min(fixed):.3f}")
    print(f"end to end: {e2e_leaks} labelled values left unmasked; {negatives_lost}/{negatives_total} hard negatives altered")
    ok = precision >= 0.95 and recall >= 0.95 and min(fixed) >= 0.99
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
