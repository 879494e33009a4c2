"""Library-upgrade audits: replay a capsule with some package versions swapped and say whether
the result moved (the paper's TensorFlow 1.9 → 1.13 story); with `bisect`, which of several
changes moved it (delta debugging over the version changes).

An environment is the capsule's pinned distributions with a subset of the changes applied.
On the host it is a throwaway venv that holds only the wheels whose versions differ from the
running Capsule's own venv, which it reaches through a site directory behind them; in docker
it is a wheelhouse and an image of its own. Each environment is checked for conflicts before
anything runs, from the wheels' own requirements."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from email.parser import Parser
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from builder.engines.wheelhouse import HOST_ONLY
from builder.engines.wheelhouse import TOOL_DISTRIBUTION as TOOL
from builder.errors import BadInput
from builder.freeze import now
from builder.observer import SILENT, Log, Observer
from builder.records.audit import AuditRecord, Change, Trial, TrialVerdict
from builder.records.enums import Device, Tier, Where
from builder.records.manifest import Manifest
from builder.records.spec import UserSpec
from builder.records.verdict import Tolerances, Verdict
from builder.store import AUDIT_PREFIX, Capsule, sha256_bytes, store_json
from builder.verdict import diff

if TYPE_CHECKING:
    from builder.engines import Engine

AUDIT_DIR = "audits"


# ---------------------------------------------------------------- the changes


def parse_with(values: list[str]) -> dict[str, str]:
    """`--with PKG==VER` (repeatable) → canonical name → version."""
    if not values:
        raise BadInput("--with: give at least one PKG==VERSION")
    found: dict[str, str] = {}
    for text in values:
        name, sep, version = text.partition("==")
        try:
            Version(version)
            valid = bool(sep and name.strip()) and Requirement(name.strip()).name == name.strip()
        except (InvalidVersion, InvalidRequirement):
            valid = False
        if not valid:
            raise BadInput(f"--with {text}: expected PKG==VERSION, e.g. numpy==2.3.5")
        key = str(canonicalize_name(name))
        if key in found:
            raise BadInput(f"--with {text}: {key} is given twice")
        found[key] = version
    return found


def base_pins(manifest: Manifest, log: Log) -> dict[str, str]:
    """The capsule's environment: the distributions its wheelhouse pins."""
    from builder.engines.wheelhouse import pinned_distributions

    requires = manifest.spec.code.requires if isinstance(manifest.spec, UserSpec) else []
    pins = pinned_distributions(
        manifest.fingerprint.distributions, manifest.spec.framework, log, requires
    )
    return {str(canonicalize_name(k)): v for k, v in pins.items()}


def plan_changes(pins: dict[str, str], wanted: dict[str, str]) -> list[Change]:
    changes = []
    for name, version in wanted.items():
        if pins.get(name) == version:
            raise BadInput(f"--with {name}=={version}: the capsule already has {name} {version}")
        changes.append(Change(name=name, old=pins.get(name), new=version))
    return changes


def applied(pins: dict[str, str], changes: list[Change]) -> dict[str, str]:
    return {**pins, **{c.name: c.new for c in changes}}


# ---------------------------------------------------------------- wheels and conflicts


def wheel_cache() -> Path:
    """Downloaded wheels are kept between audits (a release never changes its files)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = root / "capsule" / "wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _find_wheel(folder: Path, name: str, version: str) -> Path | None:
    for path in folder.glob("*.whl"):
        wheel_name, wheel_version, _, _ = parse_wheel_filename(path.name)
        if wheel_name == name and wheel_version == Version(version):
            return path
    return None


def fetch(name: str, version: str, find_links: list[Path], log: Log) -> Path:
    """The wheel of `name==version` for this platform: from the cache or the package index."""
    cache = wheel_cache()
    for folder in [*find_links, cache]:
        found = _find_wheel(folder, name, version)
        if found is not None:
            return found
    log(f"audit: downloading {name}=={version}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cache) as tmp:
        # into a folder of its own first: a concurrent audit never sees a half-written wheel
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--only-binary=:all:", "--dest", tmp, f"{name}=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = _find_wheel(Path(tmp), name, version)
        if downloaded is not None:
            os.replace(downloaded, cache / downloaded.name)
    found = _find_wheel(cache, name, version)
    if result.returncode != 0 or found is None:
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("ERROR")]
        why = errors[-1].removeprefix("ERROR: ") if errors else result.stderr.strip()[-200:]
        raise BadInput(f"--with {name}=={version}: cannot be had from the package index ({why})")
    return found


def wheel_requires(path: Path) -> list[str]:
    """Requires-Dist of a wheel, read from its METADATA (nothing in it is executed)."""
    with zipfile.ZipFile(path) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    return Parser().parsestr(text).get_all("Requires-Dist") or []


def installed_requires(name: str) -> list[str]:
    import importlib.metadata

    return importlib.metadata.distribution(name).requires or []


def check(
    env: dict[str, str], requires: dict[str, list[str]]
) -> tuple[list[str], list[Requirement]]:
    """The requirements of the distributions in `env` that `env` does not satisfy: versions
    that conflict (messages), and distributions it lacks (to be added)."""
    problems, missing = [], []
    for name, texts in sorted(requires.items()):
        for text in texts:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            have = env.get(str(canonicalize_name(req.name)))
            if have is None:
                missing.append(req)
            elif not req.specifier.contains(have, prereleases=True):
                who = f"{name} {env.get(name, '')}".strip()
                problems.append(f"{who} requires {req.name}{req.specifier}, not {have}")
    return problems, missing


def best_release(req: Requirement) -> str:
    """The version pip would choose for `req` (a dry run that installs nothing)."""
    import json

    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps"]
    command += ["--ignore-installed", "--only-binary=:all:", "--report", "-", str(req)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BadInput(f"--with: {req} is required but cannot be had from the package index")
    return str(json.loads(result.stdout)["install"][0]["metadata"]["version"])


# ---------------------------------------------------------------- environments


def host_versions(names: list[str]) -> dict[str, str]:
    import importlib.metadata

    found = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return {str(canonicalize_name(k)): v for k, v in found.items()}


def prepare(
    env: dict[str, str], find_links: list[Path], log: Log, every: bool
) -> tuple[dict[str, Path], dict[str, str]]:
    """Wheels for the environment `env` (completed in place), after checking it has no
    conflicts: those whose versions differ from Capsule's own venv (host), or all of them
    (`every`, for an image). A distribution a changed version newly requires is added at the
    release pip would choose for it; those are returned too."""
    here = host_versions(list(env))
    wheels = {
        n: fetch(n, v, find_links, log) for n, v in sorted(env.items()) if every or here.get(n) != v
    }
    added: dict[str, str] = {}
    while True:
        requires = {
            n: wheel_requires(wheels[n]) if n in wheels else installed_requires(n) for n in env
        }
        # Capsule's own base requirements count (but not those only the host's commands use:
        # HOST_ONLY stays out of every audit environment, as of every image); its framework
        # extra only pins the version it is tested with, which is what an audit changes
        requires[TOOL] = [
            text
            for text in installed_requires(TOOL)
            if str(canonicalize_name(Requirement(text).name)) not in HOST_ONLY
        ]
        problems, missing = check(env, requires)
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise BadInput(f"--with: the versions conflict: {'; '.join(problems[:3])}{more}")
        if not missing:
            return wheels, added
        for req in missing:
            name = str(canonicalize_name(req.name))
            if name not in env:
                env[name] = added[name] = best_release(req)
                log(f"audit: adding {name} {added[name]} (newly required: {req})")
                wheels[name] = fetch(name, added[name], find_links, log)


def host_environment(wheels: dict[str, Path], where: Path) -> Path:
    """A venv holding `wheels`, with Capsule's own site directory behind it (added by a .pth
    file, so the editable install and everything unchanged come from there). Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = where / "lib" / version / "site-packages"
    if wheels:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
        command += ["--disable-pip-version-check", "--no-warn-conflicts", "--target", str(target)]
        result = subprocess.run([*command, *map(str, wheels.values())], capture_output=True)
        if result.returncode != 0:
            raise BadInput(f"audit: installing the wheels failed: {result.stderr[-300:]!r}")
    behind = "".join(f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages())
    (target / "zz-capsule-behind.pth").write_text(behind)
    return where / "bin" / "python"


def audit_image(
    capsule: Capsule,
    manifest: Manifest,
    wheels: dict[str, Path],
    key: str,
    engine: Engine,
    log: Log,
) -> str:
    """An image of the audit's wheelhouse (Capsule's own wheel added), built like the capsule's:
    on the base the capsule carries, if it carries one, so only the swapped versions differ."""
    from builder.base_image import carried, restore
    from builder.engines.recipe import build_context, code_in_image, render_dockerfile
    from builder.engines.wheelhouse import build_tool_wheel

    stored = capsule.path / "wheelhouse"
    tool = sorted(stored.glob("capsule_builder-*.whl")) if stored.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="capsule-audit-wheel-") as tmp:
        if not tool:
            build_tool_wheel(Path(tmp), log)
            tool = sorted(Path(tmp).glob("capsule_builder-*.whl"))
        files = {p.name: p for p in [*wheels.values(), tool[0]]}
        image = carried(manifest, Device.cpu)
        if image is not None and image.base is not None:
            restore(capsule, image.base, engine, log)
            base_ref = image.base.image_id
        else:
            base_ref, _ = engine.base(None, log)
        pip_wheel = next(n for n in files if n.startswith("pip-"))
        dockerfile = render_dockerfile(False, base_ref, pip_wheel)
        context = build_context(dockerfile, files, code_in_image(capsule.path, manifest))
    tag = f"capsule-audit/{manifest.spec.name.lower()}:{key}-cpu"
    log(f"audit: building {tag}")
    labels = {"org.capsule.audit": key}
    return engine.build(context, tag, labels, base_ref, nocache=False, log=log)


# ---------------------------------------------------------------- one trial, bisection


def trial(
    capsule: Capsule,
    manifest: Manifest,
    pins: dict[str, str],
    changes: list[Change],
    on: Where,
    work: Path,
    observer: Observer,
    keep_images: bool,
) -> tuple[Verdict, dict[str, str]]:
    """Replay in the environment with `changes` applied and diff it against the baseline;
    also returns the distributions added because a changed version newly requires them."""
    from builder.replay import replay_in_image

    log = observer.log
    env = applied(pins, changes)
    key = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()[:12]
    label = ", ".join(str(c) for c in changes) or "no changes"
    stored = capsule.path / "wheelhouse"
    find_links = [stored] if stored.is_dir() else []
    wheels, added = prepare(env, find_links, log, every=on != Where.host)
    out = work / f"replay-{key}"
    log(f"audit: replaying with {label}")
    if on != Where.host:
        from builder.engines import open_engine

        engine = open_engine(on)
        image = audit_image(capsule, manifest, wheels, key, engine, log)
        try:
            replay_in_image(capsule, out, observer, on, image_id=image)
        finally:
            if not keep_images:
                engine.remove(image)
    else:
        python = host_environment(wheels, work / f"venv-{key}")
        command = [str(python), "-m", "builder", "replay", str(capsule.path), "--out", str(out)]
        result = subprocess.run([*command, "--on", "host"], capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or [""])[-1]
            raise BadInput(f"audit: the replay with {label} failed: {last}")
        shutil.rmtree(work / f"venv-{key}", ignore_errors=True)
    return diff(capsule.path, out, Tolerances()), added


Test = Callable[[list[Change]], bool | None]


def ddmin(changes: list[Change], moves: Test) -> list[Change]:
    """Zeller's delta debugging: a 1-minimal subset of `changes` that still moves the result.
    `moves` answers True (moved), False (identical) or None (unresolved: it conflicts)."""
    n = 2
    while len(changes) >= 2:
        size = -(-len(changes) // n)
        chunks = [changes[i : i + size] for i in range(0, len(changes), size)]
        for chunk in chunks:
            if moves(chunk) is True:
                changes, n = chunk, 2
                break
        else:
            for chunk in chunks:
                rest = [c for c in changes if c not in chunk]
                if len(chunks) > 2 and moves(rest) is True:
                    changes, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= len(changes):
                    break
                n = min(len(changes), 2 * n)
    return changes


def _short(verdict: Verdict) -> list[str]:
    return [r.message for r in verdict.reasons]


class Trials:
    """Each environment replayed at most once; a subset that cannot be set up (its versions
    conflict) is 'unresolved' for the bisection, not an error."""

    def __init__(
        self, capsule: Capsule, on: Where, work: Path, observer: Observer, keep_images: bool
    ) -> None:
        self.capsule, self.on, self.work, self.observer = capsule, on, work, observer
        self.log = observer.log
        self.keep_images = keep_images
        self.manifest = capsule.manifest
        if on != Where.host and self.manifest.controls.device == Device.cuda:
            raise BadInput(
                f"{capsule.path}: controls.device: an audit image is CPU-only; audit a CUDA "
                "capsule with --on host on a GPU machine"
            )
        self.pins = base_pins(self.manifest, lambda line: None)
        self.done: dict[frozenset[str], Verdict | None] = {}
        self.trials: list[Trial] = []

    def verdict(self, subset: list[Change], strict: bool = False) -> Verdict | None:
        key = frozenset(c.name for c in subset)
        if key in self.done:
            return self.done[key]
        names = sorted(key)
        try:
            found, added = trial(
                self.capsule,
                self.manifest,
                self.pins,
                subset,
                self.on,
                self.work,
                self.observer,
                self.keep_images,
            )
        except BadInput as error:
            if strict:
                raise
            self.log(f"audit: {', '.join(names)} cannot be set up alone: {error}")
            self.trials.append(
                Trial(changes=names, verdict=TrialVerdict.unresolved, reasons=[str(error)])
            )
            self.done[key] = None
            return None
        self.log(f"audit: {', '.join(names) or 'no changes'} → {found.verdict}")
        self.trials.append(
            Trial(
                changes=names,
                added=added,
                verdict=TrialVerdict(found.verdict),
                reasons=_short(found),
            )
        )
        self.done[key] = found
        return found

    def moves(self, subset: list[Change]) -> bool | None:
        found = self.verdict(subset)
        return None if found is None else found.verdict != Tier.identical


def audit(
    capsule: Capsule,
    wanted: dict[str, str],
    on: Where,
    bisect: bool,
    observer: Observer = SILENT,
    keep_images: bool = False,
) -> AuditRecord:
    """Replay with every change applied and diff it against the baseline; with `bisect` and a
    result that moved, name the smallest set of changes that moves it. Stored in the capsule."""
    with tempfile.TemporaryDirectory(prefix="capsule-audit-") as tmp:
        trials = Trials(capsule, on, Path(tmp), observer, keep_images)
        changes = plan_changes(trials.pins, wanted)
        full = trials.verdict(changes, strict=True)
        assert full is not None
        culprits = None
        if bisect and full.verdict != Tier.identical:
            control = trials.verdict([]) if len(changes) > 1 else None
            if control is not None and control.verdict != Tier.identical:
                raise BadInput(
                    f"audit --bisect: without any change the replay here is already "
                    f"'{control.verdict}' ({_short(control)[0]}); bisection needs a machine that "
                    "reproduces the capsule"
                )
            culprits = [c.name for c in ddmin(changes, trials.moves)]
    added = trials.trials[0].added
    reasons = [f"audit: {c}" for c in changes]
    reasons += [f"audit: {n} {v} added (the new versions require it)" for n, v in added.items()]
    reasons += _short(full)
    if culprits is not None:
        reasons.insert(0, f"bisect: the result moves with {', '.join(culprits)}")
    record = AuditRecord(
        created=now(),
        on=on,
        changes=changes,
        added=added,
        verdict=full.verdict,
        reasons=reasons,
        bisect=culprits,
        trials=trials.trials,
    )
    store_audit(capsule, record)
    return record


def store_audit(capsule: Capsule, record: AuditRecord) -> None:
    """Each audit is an artifact of its own, audit/<sha12>; the image is not relabelled."""
    data = (record.model_dump_json(indent=1) + "\n").encode()
    name = f"{AUDIT_PREFIX}{sha256_bytes(data)[:12]}"
    store_json(capsule, name, AUDIT_DIR, "audit", data)
