"""Discriminators and their controls on synthetic human-like turns with known answers."""

import random

import numpy as np
import pytest

from eval.controls import MISCALIBRATED, NO_POWER, non_human_texts, run_controls, split_users
from eval.discriminators import discriminate, fast_fold_fit, neural_fold_fit
from eval.failure_modes import is_assistant_like
from eval.style_features import words

VOCAB = ("i like my dog walk park today tomorrow pizza movie friends weekend work tired lol haha yeah nice cool "
         "going home school music game beach rain coffee sleep").split()


def human_turns(n_users=24, per_user=6, seed=0):
    """Turns of users with their own habits (casing, punctuation, favourite words)."""
    rng = random.Random(seed)
    texts, users = [], []
    for u in range(n_users):
        fav = rng.sample(VOCAB, 6)
        upper, end = rng.random() < 0.5, rng.choice(["", "?", "!", " lol", "."])
        for _ in range(per_user):
            ws = [rng.choice(fav if rng.random() < 0.5 else VOCAB) for _ in range(rng.randint(2, 10))]
            t = " ".join(ws) + end
            texts.append(t[0].upper() + t[1:] if upper else t)
            users.append(f"u{u}")
    return texts, users


def assistant_turns(texts, seed=0):
    rng = random.Random(seed)
    out = []
    for t in texts:
        w = rng.choice(t.split()).strip("?!.")
        out.append(rng.choice([
            f"Certainly! Here are some ideas about {w}:\n1. Try something new.\n2. Ask a friend.",
            f"As an AI language model, I'd be happy to help you with {w}. Let me know if you have questions.",
            f"Great question! When it comes to {w}, there are several important factors to consider.",
        ]))
    return out


def test_a_simulator_that_returns_the_human_turns_is_at_chance():
    texts, users = human_turns()
    res = discriminate(texts, users, list(texts), users, fold_fit=fast_fold_fit, n_boot=200)
    assert res.accuracy == pytest.approx(0.5)
    assert res.covers_chance()
    assert res.n_real == res.n_candidate == len(texts)


def test_human_vs_human_on_disjoint_users_covers_chance():
    texts, users = human_turns(n_users=40)
    a, b = split_users(users, seed=0)
    assert a and b and not (a & b)
    ra = [(t, u) for t, u in zip(texts, users) if u in a]
    rb = [(t, u) for t, u in zip(texts, users) if u in b]
    res = discriminate([t for t, _ in ra], [u for _, u in ra], [t for t, _ in rb], [u for _, u in rb],
                       fold_fit=fast_fold_fit, n_boot=300)
    assert res.covers_chance(), res.to_dict()


def test_assistant_like_text_is_caught_by_the_fast_discriminator():
    texts, users = human_turns()
    fake = assistant_turns(texts)
    res = discriminate(texts, users, fake, users, fold_fit=fast_fold_fit, n_boot=200)
    assert res.ci_low > 0.5 and res.accuracy > 0.9 and res.auc > 0.9
    assert np.mean([is_assistant_like(t) for t in fake]) == 1.0
    assert np.mean([is_assistant_like(t) for t in texts]) == 0.0
    assert res.roc["fpr"][0] == 0.0 and res.roc["tpr"][-1] == 1.0


def test_neural_discriminator_catches_assistant_text():
    texts, users = human_turns(n_users=10, per_user=3)
    fake = assistant_turns(texts)
    res = discriminate(texts, users, fake, users, fold_fit=neural_fold_fit(texts + fake), name="neural", n_boot=200)
    assert res.ci_low > 0.5 and res.auc > 0.8


def test_discriminate_rejects_too_little_data():
    with pytest.raises(ValueError, match="needs >= 2 real"):
        discriminate(["a"], ["u"], ["b", "c"], ["u", "v"], fold_fit=fast_fold_fit)


def test_non_human_texts_are_shuffled_or_templated_one_per_turn():
    texts, _ = human_turns(n_users=3, per_user=4)
    fake = non_human_texts(texts, seed=0)
    assert len(fake) == len(texts)
    assert sorted(fake[0].split()) == sorted(words(texts[0]))
    assert all(is_assistant_like(f) for f in fake[1::2])


def test_controls_pass_with_the_fast_discriminator_and_flag_broken_ones():
    texts, users = human_turns(n_users=40)
    ok = run_controls(texts, users, {"fast": fast_fold_fit}, n_boot=200, seed=0)
    assert ok["flags"] == []
    assert ok["human_vs_human"]["fast"]["passed"] and ok["non_human"]["fast"]["passed"]
    assert ok["non_human"]["fast"]["ci_low"] > 0.5

    def blind(train_texts, train_labels, test_texts, seed):  # no power: always 0.5
        return np.full(len(test_texts), 0.5)

    group_a, _ = split_users(users, 0)
    truth = {t: float(u not in group_a) for t, u in zip(texts, users)}

    def oracle(train_texts, train_labels, test_texts, seed):  # "knows" the groups: miscalibrated
        return np.array([truth.get(t, 1.0) for t in test_texts])

    bad = run_controls(texts, users, {"blind": blind, "oracle": oracle}, n_boot=100, seed=0)
    assert NO_POWER in bad["flags"] and MISCALIBRATED in bad["flags"]
    assert not bad["human_vs_human"]["oracle"]["passed"] and not bad["non_human"]["blind"]["passed"]
