"""Power and calibration of every judge on real data (issue 20): can it tell real humans from ChatGPT,
and does it sit at chance on two samples of the same humans?

    .venv/bin/python -m bench.judges [--judges fast,neural,lm] [--quick]

Writes bench/results/judges.json and prints one table. Every number is the output of the product's
own functions (usersim.eval.discriminators.discriminate, usersim.eval.paired.paired_discrimination,
the evaluate modules in eval/metrics), never a re-implementation.

Data (real text only; every turn, and every candidate, cut to its first ``--words`` words; every
context turn to its first ``--context_words`` words, which bounds the encoders' cost):

* ShareGPT (the packaged file, first ``--sharegpt_conversations`` conversations): real users' turns
  and the real ChatGPT replies to them. A user is a ShareGPT chat id (all parts of one chat).
* chitchat (the packaged chitchat-dataset): real human-human chats, one view per participant.

Checks, per judge:

* **power, unpaired** (``usersim discriminate``): human user turns of one half of the ShareGPT users
  against ChatGPT replies from the other half (user-disjoint), ``--power_n`` turns a side, at most 2 a
  user. Two variants: the turns alone (what a JSONL without context gives), and every turn read in
  its own real context (the human turn after the assistant's previous reply, the reply after the
  human turn it answers).
* **power, paired** (the eval's headline test): for an exchange that is not the chat's first, the
  context is the conversation up to the assistant's previous reply; the two candidate next turns are
  the human's real turn and the ChatGPT reply to it, both read in that same context. This is the
  eval's question for a simulator that writes like the assistant: same conversation, same moment,
  so topic gives nothing away. ``--power_n`` pairs, at most 2 a user.
* **calibration**: two disjoint groups of real users of one corpus (ShareGPT user turns, chitchat user
  turns), each turn in its own context. At the default eval run's size (30 + 30 users x 2 turns, about
  the eval's human-vs-human control), ``--splits`` random splits, each drawing 60 users from a fixed
  pool of ``--pool_users`` users (2 fixed turns each, so a judge featurises the pool once) and, for
  the ``--large_judges`` (fast and neural: the lm judge's cost), at about 400 pairs (200 + 200 users
  x 2 turns, ``--large_splits`` splits, each drawing 400 users from a pool of ``--large_pool_users``). Three
  tools: (1) ``discriminate``; (2) the evaluate modules (``--module_splits`` splits; turns without
  context, as their inputs allow), checked to return the same dict as the function they wrap (their
  rejection rates over a handful of splits are no calibration evidence); (3) the paired test, user k
  of group A matched with user k of group B, each turn read in its own context
  (``candidate_contexts``): exchangeable under the null. Reported: rejection rate at alpha = 0.05 (target <= 0.10), coverage of 0.5 by the CI
  (target >= 0.85), mean (debiased) accuracy, mean raw accuracy and mean null mean.
* **cost**: seconds to featurise the unpaired power texts from a cold cache, one refit (Gram matrix
  and the fold solves) and one permutation at that n.
* **variants** (``--variants``): cheap changes that could lift power: RIDGE (shared by the paired and
  unpaired tests) at other values, and the neural features standardised per block; each through the
  same power and calibration checks.

Features are label-free, so each judge featurises every (text, context) once: the neural and lm
judges cache per text/row; the fast judge's TF-IDF vocabulary and scaler are fitted on the rows of
each call, i.e. refitted for every split exactly as the tool does (cheap).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import random
import time
from typing import Any, Callable, Sequence

import numpy as np

from bench.harness import format_table, machine_info, write_result

ALPHA = 0.05
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[judges {time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def cut(text: str, n_words: int) -> str:
    return " ".join(str(text).split()[:n_words])


# ----------------------------------------------------------------------------- data
def load_sharegpt(n_conversations: int, n_words: int, context_words: int = 100):
    """Per user: exchanges ``(k, human, gpt, human_ctx, gpt_ctx)``; k = index of the exchange in its chat."""
    from usersim.data_prep.adapters import iter_source
    from usersim.data_prep.config import SourceConfig
    from usersim.data_prep.schema import ASSISTANT, USER, Quarantined
    from usersim.eval.judges import Context

    by_user: dict[str, list[tuple]] = {}
    for conv in iter_source(SourceConfig(adapter="sharegpt", max_items=n_conversations)):
        if isinstance(conv, Quarantined):
            continue
        turns = [(t.role, cut(t.text, context_words)) for t in conv.turns]
        k = 0
        for i in range(len(turns) - 1):
            (ra, a), (rb, b) = turns[i], turns[i + 1]
            if ra != USER or rb != ASSISTANT:
                continue
            human, gpt = cut(a, n_words), cut(b, n_words)
            if human and gpt:
                hist = tuple(("user" if r == USER else "assistant", t) for r, t in turns[:i])
                own = next((t for r, t in reversed(turns[:i]) if r == USER), "")
                prev = turns[i - 1][1] if i else ""
                human_ctx = Context(prev, own, hist)
                gpt_ctx = Context(a, prev, hist + (("user", a),))  # the reply after the turn it answers
                by_user.setdefault(str(conv.user_id), []).append((k, human, gpt, human_ctx, gpt_ctx))
            k += 1
    return by_user


def load_chitchat(n_conversations: int, n_words: int, context_words: int = 100):
    """Per user: ``[(turn, its context)]`` from real chitchat chats (one view per participant)."""
    from usersim.data_prep.adapters import iter_source
    from usersim.data_prep.config import SourceConfig
    from usersim.data_prep.schema import USER, Quarantined
    from usersim.eval.judges import Context

    by_user: dict[str, list[tuple]] = {}
    for conv in iter_source(SourceConfig(adapter="chitchat", max_items=n_conversations)):
        if isinstance(conv, Quarantined):
            continue
        hist: list[tuple[str, str]] = []
        previous, own = "", ""
        for turn in conv.turns:
            text = cut(turn.text, context_words)
            if turn.role == USER and cut(text, n_words):
                by_user.setdefault(str(conv.user_id), []).append(
                    (cut(text, n_words), Context(previous, own, tuple(hist))))
            if turn.role == USER:
                own = text
            previous = text
            hist.append(("user" if turn.role == USER else "assistant", text))
    return by_user


def user_turn_pool(sharegpt, chitchat) -> dict[str, dict[str, list[tuple[str, Any]]]]:
    """corpus -> user -> [(user turn, context)] for the human-vs-human checks."""
    return {"sharegpt": {u: [(h, hc) for _, h, _, hc, _ in ex] for u, ex in sharegpt.items()},
            "chitchat": chitchat}


# ----------------------------------------------------------------------------- sets
def power_sets(sharegpt, n: int, seed: int) -> dict[str, Any]:
    """Unpaired (human half vs ChatGPT half, user-disjoint) and paired (same context) power sets."""
    rng = random.Random(seed)
    users = sorted(sharegpt)
    rng.shuffle(users)
    half = len(users) // 2
    human = [(h, u, hc) for u in users[:half] for _, h, _, hc, _ in rng.sample(sharegpt[u], min(2, len(sharegpt[u])))]
    gpt = [(g, u, gc) for u in users[half:] for _, _, g, _, gc in rng.sample(sharegpt[u], min(2, len(sharegpt[u])))]
    human, gpt = rng.sample(human, min(n, len(human))), rng.sample(gpt, min(n, len(gpt)))
    later = {u: [e for e in ex if e[0] >= 1] for u, ex in sharegpt.items()}
    pairs = [(h, g, hc, u) for u in sorted(later) if later[u]
             for _, h, g, hc, _ in rng.sample(later[u], min(2, len(later[u])))]
    pairs = rng.sample(pairs, min(n, len(pairs)))
    return {"human": human, "gpt": gpt, "pairs": pairs}


def fixed_rows(by_user, users: Sequence[str], per_user: int, seed: int) -> dict[str, list[tuple]]:
    rng = random.Random(seed)
    return {u: rng.sample(by_user[u], per_user) for u in users}


def draw_pool(by_user, n_users: int, per_user: int, seed: int) -> dict[str, list[tuple]]:
    rng = random.Random(seed)
    eligible = sorted(u for u, ts in by_user.items() if len(ts) >= per_user)
    return fixed_rows(by_user, rng.sample(eligible, min(n_users, len(eligible))), per_user, seed + 1)


def split_groups(pool: dict[str, list[tuple]], n_side: int, seed: int):
    """Two disjoint groups of ``n_side`` users from ``pool`` (rows: (text, context))."""
    users = random.Random(seed).sample(sorted(pool), 2 * n_side)
    return users[:n_side], users[n_side:]


def rows_of(pool, users):
    rows = [(t, u, c) for u in users for t, c in pool[u]]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


# ----------------------------------------------------------------------------- judges and variants
def build(names: Sequence[str], lm_context_tokens: int) -> tuple[dict[str, Any], list[str]]:
    from usersim.eval.judges import build_judges

    notes: list[str] = []
    lm = None
    if "lm" in names:
        try:
            from usersim.eval.lm_judge import LMJudgeConfig, lm_judge, load_judge_lm

            model, tok = load_judge_lm()
            lm = lm_judge(model, tok, LMJudgeConfig(max_context_tokens=lm_context_tokens))
        except Exception as err:  # the lm judge is optional: note why it is left out
            notes.append(f"lm judge skipped: {type(err).__name__}: {err}")
            print(f"[judges] NOTE: {notes[-1]}", flush=True)
    judges = build_judges("neural" in names, lm=lm)
    return {n: judges[n] for n in names if n in judges}, notes


def standardised_neural(base_features: Callable) -> Callable:
    """Variant: the neural features with every dimension standardised over the rows of the call
    (label-free), then each block (turn, two context products, the cosines) scaled to unit mean norm."""

    def features(texts, contexts):
        x = np.asarray(base_features(texts, contexts), dtype=float)
        d = (x.shape[1] - 2) // 3
        out = []
        for lo, hi in ((0, d), (d, 2 * d), (2 * d, 3 * d), (3 * d, x.shape[1])):
            b = x[:, lo:hi]
            sd = b.std(0)
            z = (b - b.mean(0)) / np.where(sd > 1e-12, sd, 1.0)
            out.append(z / np.sqrt(hi - lo))
        return np.hstack(out)

    return features


def fast_min_df2(texts, contexts):
    """Variant: the fast features with n-grams seen in fewer than 2 rows of the call dropped."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    from usersim.eval.judges import context_features
    from usersim.eval.style_features import feature_matrix

    texts = list(texts)
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True, min_df=2,
                           token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, lowercase=False, min_df=2)
    dense = np.hstack([feature_matrix(texts), context_features(texts, contexts)])
    dense = StandardScaler().fit_transform(dense) / np.sqrt(dense.shape[1])
    return sparse.hstack([word.fit_transform(texts), char.fit_transform(texts), sparse.csr_matrix(dense)]).tocsr()


@contextlib.contextmanager
def ridge(value: float | None):
    """Run the paired and unpaired tests with another RIDGE (None = the shipped one)."""
    from usersim.eval import discriminators, paired

    if value is None:
        yield
        return
    original = paired.fold_smoothers
    patched = functools.partial(original, ridge=value)
    paired.fold_smoothers = discriminators.fold_smoothers = patched
    try:
        yield
    finally:
        paired.fold_smoothers = discriminators.fold_smoothers = original


# ----------------------------------------------------------------------------- checks
def unpaired(judge, a, b, *, with_context: bool, n_perm: int, seed: int) -> dict[str, Any]:
    from usersim.eval.discriminators import discriminate

    (at, au, ac), (bt, bu, bc) = a, b
    r = discriminate(judge, at, au, bt, bu, real_contexts=ac if with_context else None,
                     candidate_contexts=bc if with_context else None, n_permutations=n_perm, seed=seed)
    return r.to_dict()


def paired(judge, real, cand, ctx, cand_ctx, users, *, n_perm: int, seed: int) -> dict[str, Any]:
    from usersim.eval.paired import paired_discrimination

    r = paired_discrimination(judge, real, cand, ctx, users, candidate_contexts=cand_ctx, n_permutations=n_perm,
                              seed=seed)
    out = r.to_dict()
    out.setdefault("accuracy_raw", out["accuracy"])
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["accuracy"] for r in runs]
    raw = [r.get("accuracy_raw", r["accuracy"]) for r in runs]
    return {"splits": len(runs),
            "rejection_rate": round(float(np.mean([r["p_value"] < ALPHA for r in runs])), 4),
            "coverage": round(float(np.mean([r["ci_low"] <= 0.5 <= r["ci_high"] for r in runs])), 4),
            "mean_accuracy": round(float(np.mean(acc)), 4),
            "se_mean_accuracy": round(float(np.std(acc, ddof=1) / np.sqrt(len(acc))), 4) if len(acc) > 1 else None,
            "sd_accuracy": round(float(np.std(acc, ddof=1)), 4) if len(acc) > 1 else None,
            "mean_accuracy_raw": round(float(np.mean(raw)), 4),
            "mean_null_mean": round(float(np.mean([r["null_mean"] for r in runs])), 4),
            "mean_ci_width": round(float(np.mean([r["ci_high"] - r["ci_low"] for r in runs])), 4)}


def calibration(judge, pools: dict[str, Any], *, n_side: int, splits: int, n_perm: int, seed: int) -> dict[str, Any]:
    """Human vs human, unpaired and paired, over ``splits`` user splits per corpus."""
    out: dict[str, Any] = {}
    for corpus, pool in pools.items():
        runs_u, runs_p = [], []
        for s in range(splits):
            p = pool
            ga, gb = split_groups(p, n_side, seed + s)
            a, b = rows_of(p, ga), rows_of(p, gb)
            runs_u.append(unpaired(judge, a, b, with_context=True, n_perm=n_perm, seed=seed + s))
            pa = [(t, c, u) for u in ga for t, c in p[u]]
            pb = [(t, c, u) for u in gb for t, c in p[u]]
            runs_p.append(paired(judge, [t for t, _, _ in pa], [t for t, _, _ in pb], [c for _, c, _ in pa],
                                 [c for _, c, _ in pb], [f"{x}|{y}" for (_, _, x), (_, _, y) in zip(pa, pb)],
                                 n_perm=n_perm, seed=seed + s))
        out[corpus] = {"unpaired": {**summarise(runs_u), "n_turns": len(a[0]) + len(b[0]), "n_users": 2 * n_side,
                                    "raw_by_split": [r["accuracy_raw"] for r in runs_u]},
                       "paired": {**summarise(runs_p), "n_pairs": len(pa), "n_users": 2 * n_side}}
    return out


def module_check(judge_name: str, pools, *, n_side: int, splits: int, n_perm: int, seed: int) -> dict[str, Any]:
    """The evaluate modules on human-vs-human splits (no contexts: their inputs carry none for the
    unpaired module, one shared context per pair for the paired one), and equality with the functions."""
    import evaluate

    from usersim.eval.judges import NO_CONTEXT, build_judges
    from usersim.eval.metrics import module_path

    judge = build_judges(judge_name == "neural")[judge_name]
    m_unpaired = evaluate.load(module_path("user_turn_discrimination"), keep_in_memory=True)
    m_paired = evaluate.load(module_path("paired_user_turn_discrimination"), keep_in_memory=True)
    out: dict[str, Any] = {}
    for corpus, pool in pools.items():
        runs_u, runs_p, same = [], [], True
        for s in range(splits):
            ga, gb = split_groups(pool, n_side, seed + s)
            (at, au, _), (bt, bu, _) = rows_of(pool, ga), rows_of(pool, gb)
            got = m_unpaired.compute(texts=at + bt, user_ids=au + bu, labels=[0] * len(at) + [1] * len(bt),
                                     judge=judge_name, n_permutations=n_perm, seed=seed + s)
            ref = unpaired(judge, (at, au, None), (bt, bu, None), with_context=False, n_perm=n_perm, seed=seed + s)
            same &= got == ref
            runs_u.append(got)
            users = [f"{x}|{y}" for x, y in zip(au, bu)]
            got = m_paired.compute(predictions=bt, references=at, previous_turns=[""] * len(at),
                                   own_previous_turns=[""] * len(at), user_ids=users, judge=judge_name,
                                   n_permutations=n_perm, seed=seed + s)
            ref = paired(judge, at, bt, [NO_CONTEXT] * len(at), None, users, n_perm=n_perm, seed=seed + s)
            ref.pop("accuracy_raw")
            same &= {k: v for k, v in got.items() if k != "excluded"} == ref
            runs_p.append(got)
        out[corpus] = {"unpaired_module": summarise(runs_u), "paired_module": summarise(runs_p),
                       "same_numbers_as_functions": bool(same)}
    return out


def cost(judge, judge_fresh: Callable[[], Any], texts, users, labels, *, n_perm: int) -> dict[str, Any]:
    """Seconds: featurise the texts from a cold cache; one refit; one permutation (at this n)."""
    from usersim.eval.discriminators import balanced_accuracy, out_of_fold_scores, safe_auc
    from usersim.eval.judges import NO_CONTEXT
    from usersim.eval.paired import fold_smoothers, gram, user_folds

    fresh = judge_fresh()
    t0 = time.perf_counter()
    x = fresh.features(texts, [NO_CONTEXT] * len(texts))
    feat_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    smoothers = fold_smoothers(gram(x), user_folds(users, 5, 0))
    refit_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(n_perm):
        perm = rng.permutation(labels)
        s = out_of_fold_scores(smoothers, perm)
        balanced_accuracy(perm, s), safe_auc(perm, s)
    perm_s = (time.perf_counter() - t0) / n_perm
    return {"n_texts": len(texts), "featurise_s": round(feat_s, 3), "texts_per_s": round(len(texts) / feat_s, 1),
            "refit_s": round(refit_s, 4), "permutation_s": round(perm_s, 6), "feature_dim": int(x.shape[1])}


# ----------------------------------------------------------------------------- main
def fmt_ci(r: dict[str, Any]) -> str:
    return f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--judges", default="fast,neural,lm", help="comma-separated: fast, neural, lm")
    ap.add_argument("--words", type=int, default=60, help="every turn and candidate cut to its first N words")
    ap.add_argument("--context_words", type=int, default=100, help="every context turn cut to its first N words")
    ap.add_argument("--sharegpt_conversations", type=int, default=3000)
    ap.add_argument("--chitchat_conversations", type=int, default=3000)
    ap.add_argument("--power_n", type=int, default=500, help="turns a side (unpaired) and pairs (paired)")
    ap.add_argument("--n_permutations", type=int, default=300)
    ap.add_argument("--splits", type=int, default=40, help="calibration splits at the default run's size")
    ap.add_argument("--pool_users", type=int, default=120, help="users (2 fixed turns each) splits draw 60 from")
    ap.add_argument("--large_judges", default="fast,neural", help="judges of the ~400-pair calibration")
    ap.add_argument("--large_splits", type=int, default=20, help="calibration splits at ~400 pairs (fast, neural)")
    ap.add_argument("--large_pool_users", type=int, default=450, help="users the ~400-pair splits draw 400 from")
    ap.add_argument("--module_splits", type=int, default=3)
    ap.add_argument("--variants", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--lm_context_tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every code path")
    ap.add_argument("--output", default="judges")
    ap.add_argument("--results_dir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.sharegpt_conversations, args.chitchat_conversations = 300, 300
        args.power_n = 40
        args.n_permutations, args.splits, args.large_splits, args.module_splits = 20, 2, 1, 1
        args.pool_users = 16
        args.large_pool_users = 8
    n_side, per_user = 30, 2  # the default eval run's human-vs-human control: ~60 users, ~118 turns
    if args.quick:
        n_side = 6

    names = [n.strip() for n in args.judges.split(",") if n.strip()]
    judges, notes = build(names, args.lm_context_tokens)
    log(f"judges: {', '.join(judges)}")
    sharegpt = load_sharegpt(args.sharegpt_conversations, args.words, args.context_words)
    chitchat = load_chitchat(args.chitchat_conversations, args.words, args.context_words)
    corpora = user_turn_pool(sharegpt, chitchat)
    log(f"data: sharegpt {len(sharegpt)} users, {sum(map(len, sharegpt.values()))} exchanges; "
        f"chitchat {len(chitchat)} users, {sum(map(len, chitchat.values()))} user turns")
    sets = power_sets(sharegpt, args.power_n, args.seed)
    pools = {c: draw_pool(by, args.pool_users, per_user, args.seed + 17) for c, by in corpora.items()}
    large_n = 3 if args.quick else 200
    large_pools = {c: draw_pool(by, args.large_pool_users, per_user, args.seed + 29) for c, by in corpora.items()}

    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    from usersim.eval.judges import NO_CONTEXT, Judge, build_judges

    def power(judge, st) -> dict[str, Any]:
        h, g = st["human"], st["gpt"]
        a = ([t for t, _, _ in h], [u for _, u, _ in h], [c for _, _, c in h])
        b = ([t for t, _, _ in g], [f"{u}:assistant" for _, u, _ in g], [c for _, _, c in g])
        out = {"unpaired": unpaired(judge, a, b, with_context=False, n_perm=args.n_permutations, seed=args.seed),
               "unpaired_context": unpaired(judge, a, b, with_context=True, n_perm=args.n_permutations,
                                            seed=args.seed)}
        p = st["pairs"]
        out["paired"] = paired(judge, [h for h, _, _, _ in p], [g for _, g, _, _ in p], [c for _, _, c, _ in p],
                               None, [u for _, _, _, u in p], n_perm=args.n_permutations, seed=args.seed)
        return out

    for name, judge in judges.items():
        t_judge = time.perf_counter()
        is_lm = name == "lm"
        large = name in args.large_judges.split(",") and args.large_splits > 0
        st = sets
        res: dict[str, Any] = {}
        if judge.warm is not None:  # one pass over every row this judge will read
            t0 = time.perf_counter()
            texts, ctxs = [], []
            for t, _, c in st["human"] + st["gpt"]:
                texts += [t, t]
                ctxs += [c, None]
            for h, g, c, _ in st["pairs"]:
                texts += [h, g]
                ctxs += [c, c]
            for pool in [*pools.values(), *(large_pools.values() if large else [])]:
                for u, ts in pool.items():
                    for t, c in ts:
                        texts.append(t)
                        ctxs.append(c)
            ctxs = [NO_CONTEXT if c is None else c for c in ctxs]
            judge.warm(texts, ctxs, show_progress=False)
            res["warm_s"] = round(time.perf_counter() - t0, 1)
            log(f"{name}: features of {len(texts)} rows computed in {res['warm_s']} s")
        res["power"] = power(judge, st)
        for kind, r in res["power"].items():
            log(f"{name} power {kind}: {fmt_ci(r)} (n={r.get('n_real', r.get('n_pairs'))})")
        res["calibration_default"] = calibration(
            judge, pools, n_side=n_side, splits=args.splits,
            n_perm=args.n_permutations, seed=args.seed + 1000)
        for corpus, c in res["calibration_default"].items():
            for tool, s in c.items():
                log(f"{name} calibration {corpus} {tool}: rejection {s['rejection_rate']:.3f} coverage "
                    f"{s['coverage']:.3f} mean {s['mean_accuracy']:.4f} (raw {s['mean_accuracy_raw']:.4f})")
        if large:
            res["calibration_large"] = calibration(judge, large_pools, n_side=large_n, splits=args.large_splits,
                                                   n_perm=args.n_permutations, seed=args.seed + 2000)
            for corpus, c in res["calibration_large"].items():
                for tool, s in c.items():
                    log(f"{name} calibration ~400 {corpus} {tool}: rejection {s['rejection_rate']:.3f} coverage "
                        f"{s['coverage']:.3f} mean {s['mean_accuracy']:.4f}")
        if name in ("fast", "neural") and args.module_splits:
            res["modules"] = module_check(name, pools, n_side=n_side, splits=args.module_splits,
                                          n_perm=args.n_permutations, seed=args.seed + 3000)
            log(f"{name} modules: same numbers as the functions: "
                f"{all(c['same_numbers_as_functions'] for c in res['modules'].values())}")
        h, g = st["human"], st["gpt"]
        texts = [t for t, _, _ in h] + [t for t, _, _ in g]
        users = [u for _, u, _ in h] + [f"{u}:assistant" for _, u, _ in g]
        labels = np.r_[-np.ones(len(h)), np.ones(len(g))]
        if is_lm:
            from usersim.eval.lm_judge import LMJudgeConfig, lm_judge

            fresh_judge = lambda: lm_judge(judge.features.model, judge.features.tokenizer,  # noqa: E731
                                           LMJudgeConfig(max_context_tokens=args.lm_context_tokens))
        elif name == "neural":
            fresh_judge = lambda: build_judges(True)["neural"]  # noqa: E731
        else:
            fresh_judge = lambda: judge  # noqa: E731
        res["cost"] = cost(judge, fresh_judge, texts, users, labels, n_perm=args.n_permutations)
        res["wall_s"] = round(time.perf_counter() - t_judge, 1)
        log(f"{name} cost: {res['cost']}; judge wall {res['wall_s']} s")
        results[name] = res

    variants: dict[str, Any] = {}
    if args.variants:
        candidates: list[tuple[str, Any, float | None]] = []
        for r_value in (0.1, 1.0):
            for name in ("fast", "neural"):
                if name in judges:
                    candidates.append((f"{name}_ridge{r_value}", judges[name], r_value))
        if "fast" in judges:
            candidates.append(("fast_min_df2", Judge("fast_min_df2", "fast, n-grams in >= 2 rows", fast_min_df2), None))
        if "neural" in judges:
            std = Judge("neural_std", "neural, standardised per block", standardised_neural(judges["neural"].features))
            candidates += [("neural_std", std, None), ("neural_std_ridge1.0", std, 1.0)]
        for label, judge, r_value in candidates:
            t0 = time.perf_counter()
            with ridge(r_value):
                v = {"power": power(judge, sets),
                     "calibration_default": calibration(judge, pools, n_side=n_side, splits=args.splits,
                                                        n_perm=args.n_permutations, seed=args.seed + 1000)}
            v["wall_s"] = round(time.perf_counter() - t0, 1)
            variants[label] = v
            log(f"variant {label}: " + ", ".join(f"{k} {fmt_ci(r)}" for k, r in v["power"].items()) + "; rejections "
                + ", ".join(f"{c}/{t} {s['rejection_rate']:.3f}" for c, cc in v["calibration_default"].items()
                            for t, s in cc.items()))

    # ------------------------------------------------------------------ the table
    def add_rows(label: str, res: dict[str, Any]) -> None:
        for kind, r in res["power"].items():
            n = r.get("n_pairs") or f"{r['n_real']}+{r['n_candidate']}"
            rows.append({"judge": label, "check": f"power {kind}", "corpus": "sharegpt", "n": n,
                         "accuracy [CI]": fmt_ci(r), "p": r["p_value"], "mde": r["mde"]})
        for size in ("calibration_default", "calibration_large"):
            for corpus, c in res.get(size, {}).items():
                for tool, s in c.items():
                    n = s.get("n_pairs") or s.get("n_turns")
                    rows.append({"judge": label, "check": f"{'null' if size.endswith('default') else 'null ~400'} "
                                 f"{tool}", "corpus": corpus, "n": n, "splits": s["splits"],
                                 "reject@0.05": s["rejection_rate"], "coverage": s["coverage"],
                                 "mean acc": s["mean_accuracy"], "mean raw": s["mean_accuracy_raw"],
                                 "mean null": s["mean_null_mean"]})
        for corpus, c in res.get("modules", {}).items():
            for tool in ("unpaired_module", "paired_module"):
                s = c[tool]
                rows.append({"judge": label, "check": f"null {tool}", "corpus": corpus, "splits": s["splits"],
                             "reject@0.05": s["rejection_rate"], "coverage": s["coverage"],
                             "mean acc": s["mean_accuracy"], "same as fn": c["same_numbers_as_functions"]})

    for name, res in results.items():
        add_rows(name, res)
    for label, res in variants.items():
        add_rows(label, res)
    cost_rows = [{"judge": n, **r["cost"], "judge_wall_s": r["wall_s"]} for n, r in results.items()]
    correlation = {}
    if "fast" in results and "neural" in results:
        for corpus in results["fast"]["calibration_default"]:
            x = results["fast"]["calibration_default"][corpus]["unpaired"]["raw_by_split"]
            y = results["neural"]["calibration_default"][corpus]["unpaired"]["raw_by_split"]
            correlation[corpus] = round(float(np.corrcoef(x, y)[0, 1]), 3) if len(x) > 2 else None
    columns = ["judge", "check", "corpus", "n", "accuracy [CI]", "p", "mde", "splits", "reject@0.05", "coverage",
               "mean acc", "mean raw", "mean null", "same as fn"]
    table = format_table(rows, columns)
    print(table)
    print(format_table(cost_rows, ["judge", "n_texts", "featurise_s", "texts_per_s", "feature_dim", "refit_s",
                                   "permutation_s", "judge_wall_s"]))
    if correlation:
        print(f"fast vs neural raw human-vs-human accuracy over the same splits, correlation: {correlation}")
    for note in notes:
        print(f"NOTE: {note}")
    path = write_result(args.output, {"machine": machine_info(), "args": vars(args), "notes": notes,
                                      "judges": results, "variants": variants, "rows": rows, "cost": cost_rows,
                                      "fast_neural_null_correlation": correlation, "table": table,
                                      "wall_s": round(time.perf_counter() - _T0, 1)},
                        results_dir=args.results_dir)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
