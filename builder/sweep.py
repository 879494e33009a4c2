"""Seed and data-order sweeps: the capsule's experiment run again under many init and order
seeds, each run's outcome stored in the capsule (artifact "sweep").

Finished runs are appended to the sweep's own journal in the capsule directory as they complete,
so an interrupted sweep (Ctrl-C, SIGTERM, a killed worker or even a killed command) keeps them,
and the next sweep — with the same or more seeds — runs only what is missing. The record is
stored under the capsule's write lock, merged with the record and journals as they are then:
two sweeps of one capsule at once end with the union of their runs. Where the runs execute is an
executor's business (`builder.executors`); this module plans, journals and stores.
"""

from __future__ import annotations

from builder.errors import BadInput
from builder.executors import Executor, Failure, Key, get_executor
from builder.executors.journal import OwnJournal, ended, read_journal
from builder.observer import SILENT, Observer
from builder.records.enums import Where
from builder.records.manifest import Manifest
from builder.records.results import RunFailure, SweepResult
from builder.records.sweep import Summary, SweepRecord, SweepRun
from builder.store import SWEEP, Capsule, load_sweep, store_json

Runs = dict[Key, SweepRun]

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
    """Store the record as artifact "sweep", then remove the previous one."""
    data = (record.model_dump_json(indent=1) + "\n").encode()
    with capsule.writing():
        previous = store_json(capsule, SWEEP, SWEEP_DIR, "sweep", data)
        if previous is not None and previous.path != capsule.manifest.artifacts[SWEEP].path:
            (capsule.path / previous.path).unlink(missing_ok=True)


def store_union(capsule: Capsule, finished: Runs, journal: str) -> None:
    """Read-modify-write under the capsule's write lock: the stored record and every journal as
    they are now, with this sweep's runs (`finished`, updated to the union); then the journals
    of this sweep and of sweeps that ended go (their runs are stored)."""
    with capsule.writing():
        stored = load_sweep(capsule.path, capsule.manifest)
        union = stored.by_key() if stored else {}
        union.update({(r.init, r.order): r for r in read_journal(capsule.path)})
        union.update(finished)
        finished.update(union)
        done = ended(capsule.path, journal)
        runs = sorted(union.values(), key=lambda r: (r.init, r.order))
        if runs and (stored is None or runs != stored.runs):
            from builder.stats import summarized

            store_sweep(capsule, summarized(runs))
        for path in done:
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
    in the executor's Python or (`on` an engine) in containers of the capsule's image — here,
    or one per Slurm task; keep every finished run, store the record."""
    runner: Executor
    if on == Where.host:
        runner = get_executor(executor)
    elif executor == "slurm":
        from builder.executors.slurm import SlurmArray

        runner = SlurmArray(on.value)
    elif executor != "local":
        raise BadInput(f"--on {on} does not go with --executor {executor}")
    else:
        from builder.executors.container import ContainerRuns

        runner = ContainerRuns(on.value)
    wanted = plan(capsule.manifest, seeds, orders)
    with OwnJournal(capsule.path) as journal:
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
            failures = runner.run(capsule, todo, jobs, keep, journal.name)
        finally:
            store_union(capsule, finished, journal.name)  # also after Ctrl-C or SIGTERM
    from builder.stats import summarized

    record = summarized(sorted(finished.values(), key=lambda r: (r.init, r.order)))
    stats = record.summaries or []
    return SweepResult(
        path=str(capsule.path),
        ran=len(todo) - len(failures),
        reused=len(wanted) - len(todo),
        failures=[RunFailure(init=f.init, order=f.order, error=f.error) for f in failures],
        stats=stats,
        runs=record.runs,
        warnings=zero_spread(record.runs, stats),
    )


def zero_spread(runs: list[SweepRun], stats: list[Summary]) -> list[str]:
    """Runs under different seeds that all came out the same: the seeds the sweep varies do
    not reach the code (it reseeds with a constant, or draws its order outside the run), so
    the sweep's spread measures nothing."""
    if len({(r.init, r.order) for r in runs}) < 2:
        return []
    seeds = " and ".join(
        axis
        for axis, values in (("init", {r.init for r in runs}), ("order", {r.order for r in runs}))
        if len(values) > 1
    )
    found = [
        f"{s.metric} is the same in all {s.n} runs although their {seeds} seeds differ "
        "(std 0): the varied seeds do not reach the code (does it reseed with a constant, or "
        "draw its data order outside the run? see the capsule's findings)"
        for s in stats
        if s.n > 1 and s.std == 0
    ]
    if len({r.weights_sha256 for r in runs}) == 1:
        found.append(
            f"all {len(runs)} runs trained bit-identical weights although their {seeds} seeds "
            "differ"
        )
    return found
