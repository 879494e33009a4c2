"""Seed and data-order sweeps: the capsule's experiment run again under many init and order
seeds, each run's outcome stored in the capsule (artifact "sweep").

Finished runs are appended to a journal in the capsule directory as they complete, so an
interrupted sweep (Ctrl-C, a killed worker) keeps them, and the next sweep — with the same or
more seeds — runs only what is missing. Where the runs execute is an executor's business
(`builder.executors`); this module plans, journals and stores.
"""

from __future__ import annotations

from builder.errors import BadInput
from builder.executors import Executor, Failure, Key, get_executor
from builder.executors.journal import journals, read_journal
from builder.observer import SILENT, Observer
from builder.records.enums import Where
from builder.records.manifest import Manifest
from builder.records.results import RunFailure, SweepResult
from builder.records.sweep import SweepRecord, SweepRun
from builder.store import SWEEP, Capsule, load_sweep, store_json

PRIME_FLOOR = 1_000_000
SWEEP_DIR = "sweeps"


# ---------------------------------------------------------------- which seeds


def primes_above(floor: int, count: int) -> list[int]:
    """The `count` smallest primes greater than `floor` (trial division: a few thousand
    divisions per candidate at this size)."""
    found: list[int] = []
    candidate = floor + 1
    while len(found) < count:
        if candidate > 1 and all(candidate % d for d in range(2, int(candidate**0.5) + 1)):
            found.append(candidate)
        candidate += 1
    return found


def parse_seeds(text: str, option: str) -> list[int]:
    """`N` → 1…N; `primes:N` → the N smallest primes above 1,000,000 (1000003, 1000033, …,
    the paper's "100 unique large primes"); `a,b,c` → those seeds."""
    text = text.strip()
    try:
        if text.startswith("primes:"):
            count = int(text.removeprefix("primes:"))
            if count < 1:
                raise ValueError
            return primes_above(PRIME_FLOOR, count)
        if "," not in text:
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(1, count + 1))
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(
            f"{option} {text!r}: expected N, primes:N or a,b,c (non-negative integers)"
        ) from None
    if not seeds or any(s < 0 or s >= 2**63 for s in seeds):
        raise BadInput(f"{option} {text!r}: seeds must be integers in [0, 2**63)")
    return list(dict.fromkeys(seeds))


def plan(manifest: Manifest, seeds: list[int] | None, orders: list[int] | None) -> list[Key]:
    """Every (init, order) pair: the given seeds crossed with the given orders; an axis not
    given keeps the capsule's own seed."""
    inits = seeds or [manifest.spec.seeds.init]
    order_seeds = orders or [manifest.spec.seeds.order]
    return [(i, o) for i in inits for o in order_seeds]


# ---------------------------------------------------------------- journal and storage


def store_sweep(capsule: Capsule, record: SweepRecord) -> None:
    """Store the record as artifact "sweep", then remove the previous one and the journals."""
    data = (record.model_dump_json(indent=1) + "\n").encode()
    previous = store_json(capsule, SWEEP, SWEEP_DIR, "sweep", data)
    if previous is not None and previous.path != capsule.manifest.artifacts[SWEEP].path:
        (capsule.path / previous.path).unlink(missing_ok=True)
    for path in journals(capsule.path):
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the sweep


def sweep(
    capsule: Capsule,
    seeds: list[int] | None,
    orders: list[int] | None,
    jobs: int,
    observer: Observer = SILENT,
    executor: str = "local",
    on: Where = Where.host,
) -> SweepResult:
    """Run what is missing of the plan on the named executor (`builder.executors.EXECUTORS`),
    or `on` an engine in containers of the capsule's image; keep every finished run, store
    the record."""
    runner: Executor
    if on == Where.host:
        runner = get_executor(executor)
    elif executor != "local":
        raise BadInput(
            f"--on {on} runs in containers here; it does not go with --executor {executor}"
        )
    else:
        from builder.executors.container import ContainerRuns

        runner = ContainerRuns(on.value)
    wanted = plan(capsule.manifest, seeds, orders)
    stored = load_sweep(capsule.path, capsule.manifest)
    finished = stored.by_key() if stored else {}
    finished.update({(r.init, r.order): r for r in read_journal(capsule.path)})
    todo = [key for key in wanted if key not in finished]
    observer.planned(len(todo), len(wanted) - len(todo))

    def keep(run: SweepRun) -> None:
        finished[(run.init, run.order)] = run  # the executor has journalled it
        observer.run_done(run)

    failures: list[Failure] = []
    try:
        failures = runner.run(capsule, todo, jobs, keep)
    finally:
        finished.update({(r.init, r.order): r for r in read_journal(capsule.path)})
        runs = sorted(finished.values(), key=lambda r: (r.init, r.order))
        if runs and (stored is None or runs != stored.runs):
            store_sweep(capsule, SweepRecord(runs=runs))
    from builder.stats import summaries

    record = SweepRecord(runs=sorted(finished.values(), key=lambda r: (r.init, r.order)))
    return SweepResult(
        path=str(capsule.path),
        ran=len(todo) - len(failures),
        reused=len(wanted) - len(todo),
        failures=[RunFailure(init=f.init, order=f.order, error=f.error) for f in failures],
        stats=summaries(record),
        runs=record.runs,
    )
