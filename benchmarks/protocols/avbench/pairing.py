"""The av-benchmark pairing rules (fixture README 2.1, traps T5/T6), with every left-out name explained.

The original pairs ground-truth (GT) and generated files by file stem, differently per metric:

* FD-PANN, FD-VGG and ISC-PANNS use **all** files of each side (no pairing);
* KL-PANNS pairs by **exact** stem (``unroll_paired_dict_with_key``);
* FD-PASST, KL-PASST, ISC-PASST, IB-Score and DeSync pair each generated stem, after `clean_sample_name`, with the
  GT stem it equals (``unroll_paired_dict``); IB and DeSync pair with GT **videos**.

`clean_sample_name` rewrites generated names by length only (a VGGSound naming hack): 30 characters ->
``name[10:28]``, 20 -> ``name[:18]``, 21 -> ``name[1:19]``, any other length unchanged. It is reproduced for
comparability, and `Pairing` records each name it changed, so a user sees, e.g., that ``Y---g-f_I2yQ_000001_0``
became ``---g-f_I2yQ_000001`` and paired with nothing.

Orders follow the original: pairs in generated-set order (the generated cache's order), every list of names in
the order given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def clean_sample_name(name: str) -> str:
    """av-benchmark's ``clean_sample_name``: generated stems of 30, 20 or 21 characters are cut (see module doc)."""
    if len(name) == 30:
        return name[10:28]
    if len(name) == 20:
        return name[:18]
    if len(name) == 21:
        return name[1:19]
    return name


@dataclass
class Pairing:
    """Pairs ``(gt name, generated name)`` in generated order, and the names left out on each side with why."""

    rule: str  # "cleaned" or "exact"
    pairs: list[tuple[str, str]] = field(default_factory=list)
    unpaired_generated: dict[str, str] = field(default_factory=dict)
    unpaired_gt: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)  # generated name -> cleaned name, where they differ

    @property
    def gt_names(self) -> list[str]:
        return [g for g, _ in self.pairs]

    @property
    def generated_names(self) -> list[str]:
        return [p for _, p in self.pairs]

    def to_dict(self) -> dict:
        return {"rule": self.rule, "num_pairs": len(self.pairs), "pairs": [list(p) for p in self.pairs],
                "unpaired_generated": dict(self.unpaired_generated), "unpaired_gt": dict(self.unpaired_gt),
                "renamed": dict(self.renamed)}


def pair(gt_names: Sequence[str], generated_names: Sequence[str], rule: str, gt_what: str = "ground-truth audio"
         ) -> Pairing:
    """Pair `generated_names` with `gt_names` by ``rule`` (``"cleaned"``: `clean_sample_name` of the generated
    name must equal a GT name; ``"exact"``: equal stems). `gt_what` names the GT side in the reasons."""
    if rule not in ("cleaned", "exact"):
        raise ValueError(f"unknown pairing rule {rule!r}")
    gt_set = set(gt_names)
    out = Pairing(rule)
    used: set[str] = set()
    for name in generated_names:
        key = clean_sample_name(name) if rule == "cleaned" else name
        if key != name:
            out.renamed[name] = key
        if key in gt_set:
            out.pairs.append((key, name))
            used.add(key)
        elif key != name:
            out.unpaired_generated[name] = (f"clean_sample_name turns it into {key!r} ({len(name)} characters), "
                                            f"which matches no {gt_what} name")
        elif rule == "exact" and clean_sample_name(name) in gt_set:
            out.unpaired_generated[name] = (f"no {gt_what} named {name!r}; this metric pairs exact names only "
                                            f"(the cleaned name {clean_sample_name(name)!r} pairs for PaSST, IB "
                                            f"and DeSync)")
        else:
            out.unpaired_generated[name] = f"no {gt_what} named {key!r}"
    for name in gt_names:
        if name not in used:
            out.unpaired_gt[name] = "no generated file pairs with it"
    return out
