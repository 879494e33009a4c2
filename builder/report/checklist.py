"""The reproducibility checklist: the items of the NeurIPS paper checklist and of the ACM
artifact badges that a capsule answers by itself, each met or not with its evidence.

Only what the capsule (and the runs compared with it) can show is asked: whether the
artifacts are publicly archived, or whether an independent team replicated the results, is
not something a capsule knows, so those items are not listed.
"""

from __future__ import annotations

from builder.records.manifest import Manifest
from builder.records.report import CheckItem, Compared, RunFacts, Variance
from builder.records.spec import Spec

GOOD = {"identical", "close", "equivalent"}


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def checklist(
    manifest: Manifest,
    facts: RunFacts,
    compared: list[Compared],
    variance: Variance | None,
    licences: dict[str, str],
) -> list[CheckItem]:
    name = facts.path
    spec = manifest.spec
    items = [
        CheckItem(
            source="NeurIPS",
            item="Experimental result reproducibility: the exact commands to replay",
            met=True,
            evidence=f"capsule verify {name} && capsule replay {name} --out REPLAY && "
            f"capsule diff {name} REPLAY --require identical",
        )
    ]
    if isinstance(spec, Spec):
        t = spec.train
        setting = (
            f"the spec is stored (artifact spec): {spec.model.kind} {spec.model.hidden} "
            f"{spec.model.activation}, {t.optimizer} lr {t.lr}, betas {list(t.betas)}, eps "
            f"{t.eps}, {t.epochs} epochs, batch {t.batch_size}, {t.dtype}, seeds init "
            f"{spec.seeds.init} / order {spec.seeds.order}"
        )
    else:
        params = ", ".join(f"{k} = {v}" for k, v in spec.params.items()) or "no params"
        setting = (
            f"the spec and the code are stored: {spec.entrypoint}, {params}, seeds init "
            f"{spec.seeds.init} / order {spec.seeds.order}"
        )
    items.append(
        CheckItem(
            source="NeurIPS",
            item="Experimental setting: hyperparameters, seeds and controls",
            met=True,
            evidence=f"{setting}; deterministic = {facts.deterministic}, threads "
            f"{facts.threads}, device {facts.device}",
        )
    )
    if variance is not None:
        rows = ", ".join(
            f"{s.metric} {100 * s.mean:.2f} % [{100 * s.ci_low:.2f}, {100 * s.ci_high:.2f}]"
            for s in variance.summaries
            if s.metric.endswith("_error")
        ) or ", ".join(f"{s.metric} [{s.ci_low:.4g}, {s.ci_high:.4g}]" for s in variance.summaries)
        evidence = (
            f"95 % t-interval of the mean over {variance.runs} runs ({variance.init_seeds} init "
            f"seed(s) x {variance.order_seeds} data-order seed(s), `capsule sweep`): {rows}"
        )
    else:
        evidence = "no seed/order sweep in the capsule: run `capsule sweep CAPSULE --seeds N`"
    items.append(
        CheckItem(
            source="NeurIPS",
            item="Statistical significance: error bars and their source",
            met=variance is not None,
            evidence=evidence,
        )
    )
    gpus = ", ".join(facts.gpus) or "no GPU"
    compute = (
        f"{facts.cpu_model}, {facts.cores} cores, {gpus}; device {facts.device}, "
        f"{facts.threads} thread(s); baseline training {_seconds(facts.train_seconds)}"
    )
    total = facts.train_seconds + sum(c.facts.train_seconds for c in compared)
    if variance is not None:
        compute += (
            f"; sweep {variance.runs} runs, {_seconds(variance.seconds / variance.runs)} per run"
        )
        total += variance.seconds
    items.append(
        CheckItem(
            source="NeurIPS",
            item="Compute resources: hardware, time per run and in total",
            met=True,
            evidence=f"{compute}; total training recorded {_seconds(total)}",
        )
    )
    versions = f"{facts.framework} {facts.framework_version}, {facts.python}"
    numpy = manifest.fingerprint.distributions.get("numpy")
    versions += f", numpy {numpy}" if numpy else ""
    versions += f"; {len(manifest.fingerprint.distributions)} distributions pinned"
    if licences:
        shown = "; ".join(f"{k}: {v}" for k, v in sorted(licences.items()))
        evidence = f"{versions}; licences {shown}"
    else:
        evidence = (
            f"{versions}; licences not recorded: no wheelhouse stored (`capsule build` stores "
            "the wheels, whose metadata carry them)"
        )
    items.append(
        CheckItem(
            source="NeurIPS",
            item="Licences and versions of the frameworks used",
            met=bool(licences),
            evidence=evidence,
        )
    )
    digests = manifest.data is not None or bool(manifest.inputs)
    if manifest.data is not None:
        data = f"{len(manifest.data.splits)} split(s), each with its sha256"
        if "order" in manifest.artifacts:
            data += "; the recorded order of every epoch is stored"
    elif manifest.inputs:
        data = f"{len(manifest.inputs)} input(s) the code read, each with its sha256"
    else:
        data = "the code read no data Capsule recorded (no run.data or run.record_arrays)"
    items.append(
        CheckItem(
            source="NeurIPS",
            item="Open access to data and code: data digests",
            met=digests,
            evidence=data,
        )
    )
    stored = sorted(n for n in manifest.artifacts if not n.startswith("wheelhouse"))
    items.append(
        CheckItem(
            source="ACM",
            item="Artifacts Evaluated — Functional: complete, consistent and exercisable",
            met="weights" in manifest.artifacts,
            evidence=f"manifest digest checked; {len(stored)} artifact(s) named by sha256 "
            f"(`capsule verify` re-hashes them); digest sha256:{facts.digest}",
        )
    )
    images = ", ".join(f"{v}: {i.image_id[:19]}…" for v, i in sorted(manifest.images.items()))
    items.append(
        CheckItem(
            source="ACM",
            item="Artifacts Evaluated — Reusable: rebuildable offline",
            met=bool(manifest.images),
            evidence=f"image built from the stored wheelhouse ({images})"
            if images
            else "no image recorded: `capsule build CAPSULE` builds one from a stored wheelhouse",
        )
    )
    good = [c for c in compared if c.verdict.verdict in GOOD]
    if good:
        evidence = "; ".join(f"{c.facts.label}: {c.verdict.verdict}" for c in good)
    elif compared:
        evidence = "every run compared diverged: " + ", ".join(c.facts.label for c in compared)
    else:
        evidence = "no replay was given to this report"
    items.append(
        CheckItem(
            source="ACM",
            item="Results Reproduced: a replay obtained the baseline's results",
            met=bool(good),
            evidence=evidence,
        )
    )
    return items
