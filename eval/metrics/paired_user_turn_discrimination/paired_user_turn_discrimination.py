"""Paired user-turn discrimination as an ``evaluate`` metric: the headline of ``usersim eval``.

A thin wrapper: like the eval, it keeps the complete pairs (usersim.eval.paired.complete_pairs) and hands
them, with their contexts (usersim.eval.judges.Context), to usersim.eval.paired.paired_discrimination, with the eval's
defaults (usersim.eval.config.EvalConfig). Nothing is computed here.
"""

import datasets
import evaluate

try:  # in a try block, evaluate's loader does not ask for a package named after the import
    from usersim.eval import config, judges, paired
except ModuleNotFoundError as err:
    raise ImportError("this evaluate module calls the installed usersim package: pip install usersim") from err

EVAL = config.EvalConfig()  # the defaults of `usersim eval`: judge, folds, permutations, seed

_DESCRIPTION = """\
Shown the context and two candidate next user turns, the real one and the simulated one, can a judge
tell which is real? The paired headline of usersim's eval: the judge (`fast`: n-grams, style and the
turn's relation to its context; `neural`: MiniLM embeddings of the turn and its context) scores each
pair with an antisymmetric kernel ridge pair model, cross-fitted with folds grouped by user. Accuracy
0.5 = indistinguishable. The null swaps the two sides of all pairs of a random set of users and refits
the whole cross-fitting: exact p-value, CI (test inversion united with a cluster-robust interval),
null band and minimum detectable effect (MDE). Pairs where either side is missing or empty are left
out and counted, as in the eval. Same numbers as the eval for the same pairs, judge and seed.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the simulated user turn per item ("": no turn, left out and counted).
    references (list of str): the real user turn that answered the same context.
    previous_turns (list of str): the other side's turn just before ("" = none).
    own_previous_turns (list of str): the user's own previous turn ("" = none).
    user_ids (list of str): the real user of each item; a user's pairs stay in one fold and flip together.
    judge (str): "fast" (default) or "neural" (MiniLM, offline); the lm judge needs a loaded LM: use usersim eval.
    n_splits (int): cross-fitting folds, grouped by user (default 5).
    n_permutations (int): sign-flip permutations of the null, each an exact refit (default 2000).
    seed (int): folds and permutations (default 0).
Returns:
    judge, accuracy, ci_low, ci_high, p_value, null_low, null_high, null_mean, mde, n_permutations,
    n_pairs, n_users, and excluded (items left out, as in metrics.json: ended = a side is None, empty =
    a side is blank, capped = always 0 here: cut every turn to one token budget before scoring).
Examples:
    >>> metric = evaluate.load("eval/metrics/paired_user_turn_discrimination")
    >>> metric.compute(predictions=sim, references=real, previous_turns=prev, own_previous_turns=own,
    ...                user_ids=users)["accuracy"]
"""


class PairedUserTurnDiscrimination(evaluate.Metric):
    """Paired accuracy of a cross-fitted judge picking the real turn out of (real, simulated) pairs."""

    def _info(self):
        text = datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": text, "references": text, "previous_turns": text,
                                        "own_previous_turns": text, "user_ids": text}),
        )

    def add_batch(self, **columns):
        """Add items; a missing input or columns of unequal length are refused here, with their lengths."""
        lengths = {k: None if columns.get(k) is None else len(columns[k]) for k in self._feature_names()}
        if None in lengths.values() or len(set(lengths.values())) > 1:
            raise ValueError("paired_user_turn_discrimination needs predictions, references, previous_turns, "
                             f"own_previous_turns and user_ids, one per item: got lengths {lengths}")
        super().add_batch(**columns)

    def _compute(self, predictions, references, previous_turns, own_previous_turns, user_ids,
                 judge="fast", n_splits=EVAL.n_splits, n_permutations=EVAL.n_permutations,
                 seed=EVAL.seed):
        judge_fn = judges.build_judges(judge == "neural").get(judge)
        if judge_fn is None:
            raise ValueError(f"unknown judge {judge!r}: use 'fast' or 'neural'")
        keep, excluded = paired.complete_pairs(references, predictions, [False] * len(references))
        contexts = [judges.Context(previous_turns[i] or "", own_previous_turns[i] or "") for i in keep]
        try:
            result = paired.paired_discrimination(
                judge_fn, [references[i] for i in keep], [predictions[i] for i in keep], contexts,
                [user_ids[i] for i in keep], n_splits=n_splits, n_permutations=n_permutations, seed=seed)
        except ValueError as err:
            raise ValueError(f"{err}; items left out as incomplete pairs: {excluded}") from None
        return {**result.to_dict(), "excluded": excluded}
