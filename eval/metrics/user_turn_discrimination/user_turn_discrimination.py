"""Unpaired user-turn discrimination as an ``evaluate`` metric: the numbers of ``usersim discriminate``.

A thin wrapper: the rows are split into the real and the candidate turns (each in the order given)
and handed to usersim.eval.discriminators.discriminate with one judge of usersim.eval.judges. Nothing is computed here.
"""

import inspect

import datasets
import evaluate

try:  # in a try block, evaluate's loader does not ask for a package named after the import
    from usersim.eval import discriminate_cli, discriminators, judges
except ModuleNotFoundError as err:
    raise ImportError("this evaluate module calls the installed usersim package: pip install usersim") from err

LABELS = ("real", "candidate")  # class 0 = a real human turn, class 1 = a candidate (simulated) turn
# the defaults of `usersim discriminate` (usersim.eval.discriminate_cli.score), so a bare call gives its numbers
CLI = {k: p.default for k, p in inspect.signature(discriminate_cli.score).parameters.items()}

_DESCRIPTION = """\
Can a judge tell real human user turns from candidate (simulated) turns? Unpaired mode of usersim:
every turn is featurised by a judge (`fast`: TF-IDF word and character n-grams and style features;
`neural`: frozen MiniLM embeddings), a kernel ridge classifier is cross-fitted with folds grouped by
user, and the out-of-fold scores give the balanced accuracy (0.5 = indistinguishable) and the AUC.
Inference permutes the labels over (user, label) blocks and re-runs the whole cross-fitting: exact
p-value, test-inverting CI, null band and minimum detectable effect (MDE). Same numbers as
`usersim discriminate` for the same judge, seed and number of permutations.
"""

_KWARGS_DESCRIPTION = """
Args:
    texts (list of str): every turn, real and candidate, one per row (non-empty).
    user_ids (list of str): the user who wrote (or is simulated as) each turn; the same id on both
        sides is the same person and stays in one fold.
    labels (list of str or int): "real" (0) or "candidate" (1) per row.
    judge (str): "fast" (default) or "neural" (MiniLM, offline).
    n_splits (int): cross-fitting folds, grouped by user (default 5).
    n_permutations (int): permutations of the null, each a full re-run of the cross-fitting (default 1000).
    seed (int): folds and permutations (default 0).
    with_roc (bool): also return the ROC curve points (`roc`: fpr, tpr), as `usersim discriminate` writes.
Returns:
    judge, accuracy (balanced, debiased by its null's mean), ci_low, ci_high, p_value, null_low, null_high,
    null_mean, mde, n_permutations, accuracy_raw, auc, auc_raw, auc_ci_low, auc_ci_high, auc_p_value,
    n_real, n_candidate, n_users.
Examples:
    >>> metric = evaluate.load("eval/metrics/user_turn_discrimination")
    >>> metric.compute(texts=real + sim, user_ids=real_users + sim_users,
    ...                labels=["real"] * len(real) + ["candidate"] * len(sim))["accuracy"]
"""


class UserTurnDiscrimination(evaluate.Metric):
    """Balanced accuracy (and AUC) of a cross-fitted judge telling real from candidate user turns."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"texts": datasets.Value("string"), "user_ids": datasets.Value("string"),
                                        "labels": datasets.ClassLabel(names=list(LABELS))}),
        )

    def add_batch(self, **columns):
        """Add rows; a missing input or columns of unequal length are refused here, with their lengths."""
        sizes = {k: None if columns.get(k) is None else len(columns[k]) for k in self._feature_names()}
        if None in sizes.values() or len(set(sizes.values())) > 1:
            raise ValueError(f"user_turn_discrimination needs texts, user_ids and labels, one per turn: "
                             f"got lengths {sizes}")
        super().add_batch(**columns)

    def _compute(self, texts, user_ids, labels, judge="fast", n_splits=CLI["n_splits"],
                 n_permutations=CLI["n_permutations"], seed=CLI["seed"], with_roc=False):
        empty = [i for i, t in enumerate(texts) if not t or not t.strip()]
        if empty:
            raise ValueError(f"user_turn_discrimination: an empty turn is no user turn (rows {empty[:10]})")
        judge_fn = judges.build_judges(judge == "neural").get(judge)
        if judge_fn is None:
            raise ValueError(f"unknown judge {judge!r}: use 'fast' or 'neural'")
        side = {name: [i for i, lab in enumerate(labels) if lab == k] for k, name in enumerate(LABELS)}
        result = discriminators.discriminate(
            judge_fn, [texts[i] for i in side["real"]], [user_ids[i] for i in side["real"]],
            [texts[i] for i in side["candidate"]], [user_ids[i] for i in side["candidate"]],
            n_splits=n_splits, n_permutations=n_permutations, seed=seed)
        return result.to_dict(with_roc=with_roc)
