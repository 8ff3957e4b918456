"""``usersim discriminate``: score any candidate user turns against real human turns.

Bring your own simulator: write its turns and the real held-out turns as JSONL rows
``{"user_id": ..., "text": ...}``, optionally with ``"context": [{"role": "user"|"assistant", "text": ...},
...]``, the conversation before the turn, oldest first (every judge then reads the turn in it; other
extra keys are ignored), then::

    usersim discriminate --real real.jsonl --candidate cand.jsonl --output scores.json [--no-neural] [--lm]

The judges of ``usersim eval`` (usersim.eval.judges; folds grouped by user id; ``--lm`` adds the lm judge
over the packaged Gemma-3-270M base, or ``--lm-model DIR``) and the behavioural statistics (candidate vs
real) are computed; the output JSON holds ``{"fast": {...}, "neural": {...}, "lm": {...}, "behaviour": {...}}`` with ``accuracy`` (balanced), ``ci_low, ci_high, p_value, null_low, null_high,
mde, auc, n_real, n_candidate`` per judge. Real and candidate turns are unpaired samples; every
accuracy is read against its permutation null (labels permuted by user, the whole cross-fitting
re-run: usersim.eval.discriminators), so the p-value is exact and the CI covers 0.5 at the nominal rate when
the two files come from the same humans. A user id present in both files is the same person (kept
in the same fold). Where each candidate answers the same context as a real turn, ``usersim eval``'s
paired test (usersim.eval.paired) has more power.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from usersim.eval.behaviour import behaviour_metrics
from usersim.eval.discriminators import discriminate
from usersim.eval.judges import NO_CONTEXT, Context, Judge, build_judges, item_context


class InputError(ValueError):
    """A JSONL input row is malformed (the message names file and line)."""


def read_turns(path: str | Path, with_contexts: bool = False):
    """(texts, user ids) from a JSONL file of ``{"user_id", "text"}`` rows; blank lines skipped.
    ``with_contexts``: (texts, user ids, contexts), a row's optional ``context`` turns read into a Context."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    texts, users, contexts = [], [], []
    with path.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {n}: expected an object {{\"user_id\", \"text\"}}, "
                                 f"got {type(row).__name__}")
            missing = [k for k in ("user_id", "text") if k not in row]
            if missing:
                raise InputError(f"{path}: line {n}: missing key(s) {missing}; each row needs \"user_id\" and \"text\"")
            if not isinstance(row["text"], str) or not row["text"].strip():
                raise InputError(f"{path}: line {n}: \"text\" must be a non-empty string")
            if not isinstance(row["user_id"], (str, int)) or isinstance(row["user_id"], bool):
                raise InputError(f"{path}: line {n}: \"user_id\" must be a string or integer")
            texts.append(row["text"])
            users.append(str(row["user_id"]))
            contexts.append(_row_context(row.get("context"), path, n))
    if len(texts) < 2:
        raise InputError(f"{path}: needs at least 2 rows, found {len(texts)}")
    return (texts, users, contexts) if with_contexts else (texts, users)


def _row_context(turns: Any, path: Path, n: int) -> Context:
    if turns is None:
        return NO_CONTEXT
    ok = isinstance(turns, list) and all(isinstance(t, dict) and t.get("role") in ("user", "assistant")
                                         and isinstance(t.get("text"), str) for t in turns)
    if not ok:
        raise InputError(f"{path}: line {n}: \"context\" must be a list of {{\"role\": \"user\"|\"assistant\", "
                         "\"text\": str}} turns, oldest first")
    return item_context(turns)


def score(real: tuple, candidate: tuple, *, neural: bool = True, lm: Judge | None = None,
          n_splits: int = 5, n_permutations: int = 1000, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Judges (with permutation inference) and behavioural statistics of ``candidate`` against ``real``.

    ``real``/``candidate``: (texts, user ids) or (texts, user ids, contexts)."""
    rt, ru, rc = (*real, None)[:3]
    ct, cu, cc = (*candidate, None)[:3]
    out: dict[str, Any] = {}
    for name, judge in build_judges(neural, lm=lm).items():
        res = discriminate(judge, rt, ru, ct, cu, real_contexts=rc, candidate_contexts=cc, n_splits=n_splits,
                           n_permutations=n_permutations, seed=seed)
        out[name] = res.to_dict(with_roc=True)
    # Behaviour: unpaired samples, so stack them as two aligned columns padded with None.
    n = len(rt) + len(ct)
    human = list(rt) + [None] * len(ct)
    cand = [None] * len(rt) + list(ct)
    metrics = behaviour_metrics(human, {"candidate": cand}, list(ru) + list(cu), n_boot=n_boot, seed=seed)
    out["behaviour"] = {f"{m.name}.{'real' if m.system == 'human' else m.system}": {
        "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n} for m in metrics}
    out["n_real"], out["n_candidate"], out["n_rows"] = len(rt), len(ct), n
    return out


def cli(argv: list[str] | None = None) -> int:
    import sys

    from usersim.eval.outputs import json_safe

    parser = argparse.ArgumentParser(prog="usersim discriminate",
                                     description="score candidate user turns against real human turns")
    parser.add_argument("--real", required=True, help="JSONL of real human turns: {\"user_id\", \"text\"} per line")
    parser.add_argument("--candidate", required=True, help="JSONL of candidate turns, same row shape")
    parser.add_argument("--output", default=None, help="write the scores JSON here (default: print only)")
    parser.add_argument("--no-neural", dest="neural", action="store_false", help="skip the MiniLM discriminator")
    parser.add_argument("--lm", action="store_true", help="also run the lm judge (a probe on a base LM's hidden states)")
    parser.add_argument("--lm-model", dest="lm_model", default="",
                        help="local checkpoint dir of the lm judge's LM (default: the packaged Gemma-3-270M base)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-permutations", dest="n_permutations", type=int, default=1000,
                        help="permutations (whole cross-fit re-runs) of the null")
    parser.add_argument("--n-boot", dest="n_boot", type=int, default=1000,
                        help="bootstrap resamples for the behavioural statistics' CIs")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        real, cand = read_turns(args.real, with_contexts=True), read_turns(args.candidate, with_contexts=True)
        lm = None
        if args.lm or args.lm_model:
            from usersim.eval.lm_judge import lm_judge, load_judge_lm

            lm = lm_judge(*load_judge_lm(args.lm_model or None))
        result = json_safe(score(real, cand, neural=args.neural, lm=lm, n_permutations=args.n_permutations,
                                 n_boot=args.n_boot, seed=args.seed))
    except (InputError, ValueError) as err:
        print(f"usersim discriminate: error: {err}", file=sys.stderr)
        return 2
    for name in ("fast", "neural", "lm"):
        if name in result:
            r = result[name]
            print(f"{name:7s} balanced accuracy {r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]  "
                  f"p = {r['p_value']:.3g}  null band [{r['null_low']:.3f}, {r['null_high']:.3f}]  "
                  f"MDE ±{r['mde']:.3f}  AUC {r['auc']:.3f}  (n_real={r['n_real']}, "
                  f"n_candidate={r['n_candidate']}, users={r['n_users']}; 0.5 = indistinguishable)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
