"""``privguard audit`` and ``import``: run attacks against a model and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from privguard.cli._common import (
    check_out,
    command_line,
    maybe_fail,
    out,
    print_summary,
    progress,
)
from privguard.errors import ConfigError

# The audit's options are the fields of AuditPlan: each flag below is named after its field
# (``--out`` is ``out_dir``, ``--set`` fills ``settings``), the plan file uses the same keys,
# and _audit_options turns a plan into privguard.audit keywords. test_cli checks that every
# plan field has its flag.
PLAN_PARAMS = {"out_dir": "out"}  # parameter name -> AuditPlan field, where they differ
AUDIT_KEYWORDS = {"jobs": "n_jobs"}  # AuditPlan field -> privguard.audit keyword, likewise
DOCUMENT_KEYS = ("reference", "text_column")  # language models' documents only
NOT_AUDIT_KEYWORDS = ("model", "access", "out", "fail_on")  # the command uses these itself


def audit(
    model: Path | None = typer.Option(
        None,
        "--model",
        "--model-dir",
        help="Model directory written by `privguard train`, a local Hugging Face model, or "
        "your own model file (.skops, ...) audited on --members / --nonmembers.",
    ),
    members: Path | None = typer.Option(
        None,
        help="Your model's training records (CSV / Parquet / NPZ) to audit it on; for a "
        "language model its fine-tuning documents (.txt / .jsonl / .csv / folder, docs/llm.md).",
    ),
    nonmembers: Path | None = typer.Option(
        None,
        help="Records your model never saw (CSV / Parquet / NPZ; documents for a language "
        "model); goes with --members.",
    ),
    population: Path | None = typer.Option(
        None,
        help="Other records from the same population, the attacker's knowledge [default: half "
        "of the non-members].",
    ),
    trust: list[str] | None = typer.Option(
        None,
        "--trust",
        help="An exact type name (module.Class) a .skops file may use beyond the built-in "
        "allowlist; repeat for several. Only for files you know are safe.",
    ),
    scores: Path | None = typer.Option(
        None,
        help="Metrics only: a CSV / Parquet / NPZ file of per-record scores and a member flag "
        "column; writes the membership report without querying any model.",
    ),
    member_column: str = typer.Option(
        "is_member", help="The member flag column of --scores (true/false or 1/0)."
    ),
    lower_is_member: list[str] | None = typer.Option(
        None,
        "--lower-is-member",
        help="A --scores column where lower means member (a loss); repeat for several.",
    ),
    factory: str | None = typer.Option(
        None,
        help="module:function building your PyTorch architecture, for --model WEIGHTS.safetensors "
        "(imported from the Python path: only name code you trust).",
    ),
    recipe: Path | None = typer.Option(
        None,
        help="TOML training recipe of your PyTorch model (factory, optimizer, lr, epochs, "
        "batch_size): reference models for LiRA / RMIA / shadow models are trained with it.",
    ),
    output: str | None = typer.Option(
        None, help="What your model returns: probs or logits [default: detected or logits]."
    ),
    data: str | None = typer.Option(
        None, help="The training data (default: as recorded in model.json, hash-checked)."
    ),
    label: str | None = typer.Option(None, help="Label column of a CSV/Parquet file."),
    attacks: str | None = typer.Option(
        None, help="Attack or family names, comma-separated [default: all that apply]."
    ),
    access: str | None = typer.Option(
        None, help="label, topk, probs, logits or whitebox [default: probs]."
    ),
    policy: str | None = typer.Option(
        None,
        help="Output policy the answers pass through, e.g. 'label', 'topk:3,round:2', "
        "'noise:gaussian:0.05', 'reverse-sigmoid:0.7:0.2', 'threshold:0.6'.",
    ),
    sensitive: str | None = typer.Option(
        None,
        help="Hidden field for attribute inference (tabular; default: e.g. sex); a numeric "
        "one is binned: age:bins=5.",
    ),
    seed: int | None = typer.Option(None, help="Seeds the attacks; same seed, same report."),
    budget: int | None = typer.Option(None, help="Query budget per attack."),
    jobs: int | None = typer.Option(
        None, help="Processes for shadow / reference models [default: 1]."
    ),
    scheduler: str | None = typer.Option(
        None, help="Dask scheduler address: train shadow / reference models on that cluster."
    ),
    cache_dir: Path | None = typer.Option(
        None, help="Keep trained reference models here and reuse them on reruns."
    ),
    device: str | None = typer.Option(
        None,
        help="cpu, cuda or auto: where reference models and the inversion prior train "
        "[default: cpu].",
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help="Report directory [default: privguard-report]."
    ),
    fail_on: str | None = typer.Option(
        None, help="Exit 1 when any attack's risk reaches low, medium or high."
    ),
    settings: list[str] | None = typer.Option(
        None,
        "--set",
        metavar="ATTACK.KEY=VALUE",
        help="A per-attack setting, e.g. lira-online.n_reference=32 (repeatable; "
        "`privguard attacks --settings` lists them).",
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="TOML file with these options; flags given here override it."
    ),
    redact: bool = typer.Option(
        False,
        "--redact",
        help="Leave the field values of the most exposed records out of the report.",
    ),
    reference: str | None = typer.Option(
        None, help="Language models: the base model, hf:DIR or smollm2 (text-reference)."
    ),
    text_column: str | None = typer.Option(None, help="Text column of CSV documents."),
    endpoint: str | None = typer.Option(
        None,
        help="Attack a live endpoint over HTTP instead (a gateway's base URL, or a mapped API's "
        "prediction URL), audited on --members / --nonmembers, or with --model DIR (the served "
        "model's directory) telling the evaluator who the members are.",
    ),
    api_key_file: Path | None = typer.Option(
        None, help="File holding the endpoint's API key (with --endpoint)."
    ),
    endpoint_map: Path | None = typer.Option(
        None, help="TOML/JSON request/response mapping of a non-privguard JSON API."
    ),
) -> None:
    """Run attacks against a model and write report.json, report.html and model-card.md."""
    flags = dict(locals())
    import privguard
    from privguard.audit.plan import AuditPlan

    plan = AuditPlan.from_toml(plan_file) if plan_file else AuditPlan()
    plan = plan.merged(_plan_overrides(flags))
    if endpoint is not None and any(getattr(plan, k) for k in DOCUMENT_KEYS):
        raise ConfigError("--reference and --text-column are for a local language model")
    if endpoint is not None and redact:
        raise ConfigError("--redact goes with a local audit (no --endpoint)")
    if endpoint is not None and members is not None:
        split = _user_split(members, nonmembers, population, trust)
        _audit_endpoint_split(plan, endpoint, api_key_file, endpoint_map, access, split)
        return
    if endpoint is not None:
        if nonmembers is not None or population is not None:
            raise ConfigError("--nonmembers and --population go with --members FILE")
        _audit_endpoint(plan, endpoint, api_key_file, endpoint_map, access)
        return
    if scores is not None:
        if redact:
            raise ConfigError("--redact goes with an audit of a model (no --scores)")
        _audit_scores(plan, scores, member_column, lower_is_member, members, model)
        return
    if api_key_file or endpoint_map:
        raise ConfigError("--api-key-file and --endpoint-map go with --endpoint URL")
    plan.check()
    out_path = Path(plan.out)
    check_out(out_path)
    split = _user_split(members, nonmembers, population, trust)
    model_arg: Any = plan.model
    model_options = {
        k: v
        for k, v in (("factory", factory), ("recipe", recipe), ("output", output))
        if v is not None
    }
    if model_options:
        # options of the model file's loader (privguard.models.adapters): loaded here, before
        # anything is written
        if members is None:
            raise ConfigError("--factory, --recipe and --output go with --members / --nonmembers")
        from privguard.models.adapters import adapt

        model_arg = adapt(plan.model, trusted=split["trusted"], **model_options)
    with progress() as update:
        report = privguard.audit(
            model_arg,
            access=plan.access,
            redact=redact,
            **split,
            **_audit_options(plan, update),
        )
    privguard.write_report(report, out_path)
    print_summary(report, out_path)
    maybe_fail(report, plan.fail_on)


def _audit_scores(
    plan: Any,
    scores: Path,
    member_column: str,
    lower_is_member: list[str] | None,
    members: Path | None,
    model: Path | None,
) -> None:
    """``privguard audit --scores FILE``: the membership report of given scores, no queries."""
    import privguard

    if model is not None or members is not None:
        raise ConfigError(
            "--scores audits given scores without a model: leave out --model and --members"
        )
    out_path = Path(plan.out)
    check_out(out_path)
    report = privguard.audit_scores(
        scores,
        member_column=member_column,
        lower_is_member=lower_is_member or [],
        seed=plan.seed,
        command=command_line(),
    )
    privguard.write_report(report, out_path)
    print_summary(report, out_path)
    maybe_fail(report, plan.fail_on)


def import_model(
    model: Path = typer.Option(..., "--model", help="Your model file (.skops, ...)."),
    members: Path = typer.Option(..., help="The records it was trained on (CSV/Parquet/NPZ)."),
    nonmembers: Path = typer.Option(..., help="Records it never saw (CSV/Parquet/NPZ)."),
    population: Path | None = typer.Option(None, help="Other records of the same population."),
    label: str | None = typer.Option(None, help="Label column of CSV/Parquet files."),
    trust: list[str] | None = typer.Option(
        None, "--trust", help="An exact type name a .skops file may use (repeatable)."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Model directory to write."),
) -> None:
    """Write your own model and split into a privguard model directory: the model, and the
    member / non-member files as content hashes (not copies), checked by later audits."""
    from privguard.models.user import user_target

    check_out(out_dir)
    target = user_target(
        str(model),
        members=members,
        nonmembers=nonmembers,
        population=population,
        label=label,
        trusted=list(trust or []),
    )
    target.save(out_dir)
    out.print(
        f"wrote {out_dir} (train accuracy {target.metrics['train_accuracy']:.3f}, test "
        f"{target.metrics['test_accuracy']:.3f}); audit it with --model {out_dir} --members "
        f"{members} --nonmembers {nonmembers}"
    )


def _user_split(
    members: Path | None, nonmembers: Path | None, population: Path | None, trust: list[str] | None
) -> dict[str, Any]:
    """``--members`` / ``--nonmembers`` / ``--population`` / ``--trust`` as audit keywords
    (docs/byom.md); empty when auditing a privguard model directory on its recorded split."""
    if (members is None) != (nonmembers is None):
        raise ConfigError("--members and --nonmembers go together: give both files")
    if population is not None and members is None:
        raise ConfigError("--population goes with --members and --nonmembers")
    split: dict[str, Any] = {"trusted": list(trust or [])}
    if members is not None:
        split.update(members=members, nonmembers=nonmembers, population=population)
    return split


def _plan_overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The flags given on the command line as AuditPlan keys (``None``: not given)."""
    from dataclasses import fields

    from privguard.audit.plan import AuditPlan, parse_set

    names = {f.name for f in fields(AuditPlan)}
    overrides: dict[str, Any] = {}
    for param, value in flags.items():
        key = PLAN_PARAMS.get(param, param)
        if key not in names:
            continue
        if key == "settings":
            value = parse_set(value) if value else None
        elif isinstance(value, Path):
            value = str(value)
        overrides[key] = value
    return overrides


def _audit_options(plan: Any, update: Any) -> dict:
    """The plan's options as ``privguard.audit`` (and ``audit_endpoint``) keywords."""
    from dataclasses import fields

    options = {
        AUDIT_KEYWORDS.get(f.name, f.name): getattr(plan, f.name)
        for f in fields(plan)
        if f.name not in NOT_AUDIT_KEYWORDS
    }
    return dict(options, progress=update, command=command_line())


def _audit_endpoint_split(
    plan: Any,
    url: str,
    key_file: Path | None,
    map_file: Path | None,
    access: str | None,
    split: dict[str, Any],
) -> None:
    """``audit --endpoint URL --members F --nonmembers F``: the endpoint audited on your own
    split, no model directory (docs/byom.md, docs/endpoint-audit.md)."""
    import privguard

    if plan.model is not None:
        raise ConfigError(
            "give --model DIR (the served model's directory records its split) or --members / "
            "--nonmembers (your own split), not both"
        )
    if plan.data is not None:
        raise ConfigError("--data goes with --model DIR; with --members the data are your files")
    from dataclasses import replace

    replace(plan, model=url).check()
    out_path = Path(plan.out)
    check_out(out_path)
    split.pop("trusted", None)
    model = privguard.endpoint(url, api_key_file=key_file, mapping=map_file, access=access)
    with model, progress() as update:
        report = privguard.audit(
            model, access=access or model.max_access, **split, **_audit_options(plan, update)
        )
    privguard.write_report(report, out_path)
    print_summary(report, out_path)
    _print_spent(report)
    maybe_fail(report, plan.fail_on)


def _print_spent(report: Any) -> None:
    e = report.target["endpoint"]
    out.print(
        f"endpoint {e['endpoint']}: {e['records_answered']} records answered in "
        f"{e['http_requests']} requests, {e['rate_limited_429']} rate-limited (429), "
        f"{e['seconds_waiting_on_429']} s waiting"
    )


def _audit_endpoint(
    plan: Any, url: str, key_file: Path | None, map_file: Path | None, access: str | None
) -> None:
    """``audit --endpoint``: the attacks talk HTTP only (docs/endpoint-audit.md)."""
    from dataclasses import replace

    import privguard
    from privguard.endpoint import EndpointMap, audit_endpoint, read_api_key

    replace(plan, model=plan.model or url).check()
    mapping = EndpointMap.load(map_file) if map_file else None
    api_key = read_api_key(key_file) if key_file else None
    out_path = Path(plan.out)
    check_out(out_path)
    with progress() as update:
        report = audit_endpoint(
            url,
            api_key=api_key,
            mapping=mapping,
            model=plan.model,
            access=access,
            **{k: v for k, v in _audit_options(plan, update).items() if k not in DOCUMENT_KEYS},
        )
    privguard.write_report(report, out_path)
    print_summary(report, out_path)
    _print_spent(report)
    maybe_fail(report, plan.fail_on)
