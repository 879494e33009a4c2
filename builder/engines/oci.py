"""The daemonless engine (`--on oci`, `--engine oci` on import): no Docker or Podman service,
only umoci and runc, as on a cluster node.

Images live in an OCI image layout on disk (the store: CAPSULE_OCI_STORE, else
~/.local/share/capsule/oci), tagged by image ID (`sha256-<hex>`), with their config blobs byte
for byte (builder/engines/layout.py), so the ID is the one the capsule records. An image gets
there by `capsule import --engine oci` of an export, or `load` of a `docker save` archive. Each
image is unpacked once into a runtime bundle (`umoci unpack`, cached per image ID under
`bundles/`), and every job runs with `runc run` on a config written for it: the bundle's root
file system read-only and shared by concurrent jobs, the same confinement as the container
engines (engines.confinement(): a network namespace with loopback only, the job's non-root
user, no new privileges, no capabilities, a tmpfs /tmp, pids and memory cgroup limits, the
open-files and process rlimits set, since this sandbox cannot raise them).

runc runs as root here: an unprivileged user on a cluster runs the same OCI archive with
Apptainer (README, "On a cluster").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from builder.engines import ImageInfo, Job, Log, confinement
from builder.engines.layout import (
    REF_NAME,
    add_saved,
    blob_path,
    docker_archive,
    image_manifest,
    read_index,
    write_index,
)
from builder.errors import BadInput, EngineMissing, IntegrityError

STORE_ENV = "CAPSULE_OCI_STORE"
RUNTIME_MOUNTS = [  # runc's (and umoci's) default mounts
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs",
     "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
     "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
]  # fmt: skip
MASKED_PATHS = ["/proc/kcore", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]  # fmt: skip
READONLY_PATHS = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                  "/proc/sysrq-trigger"]  # fmt: skip
CLONE_NEWUSER = 0x10000000
SECCOMP = {  # what Docker's default profile refuses a process without capabilities
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [
        {"names": ["unshare", "setns", "keyctl", "add_key", "request_key", "bpf",
                   "userfaultfd", "perf_event_open", "ptrace", "process_vm_readv",
                   "process_vm_writev", "mount", "umount2", "pivot_root", "kexec_load",
                   "kexec_file_load", "init_module", "finit_module", "delete_module",
                   "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot",
                   "acct", "fsopen", "fsmount", "move_mount", "open_tree"],
         "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "args": [{"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER,
                   "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},  # ENOSYS: clone
    ],
}  # fmt: skip
TOOLS = ("runc", "umoci")
CDI_DIRS = (Path("/var/run/cdi"), Path("/etc/cdi"))  # CDI: the first wins
NVIDIA_HOOK = "nvidia-container-runtime-hook"  # the NVIDIA container toolkit's OCI hook


def store_root() -> Path:
    """Where the daemonless engine keeps its layout, bundles and run configs."""
    chosen = os.environ.get(STORE_ENV)
    if chosen:
        return Path(chosen)
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "capsule" / "oci"


def image_tag(image_id: str) -> str:
    """The layout's tag of an image: its ID, with the colon OCI tags do not allow."""
    return image_id.replace(":", "-")


class OciEngine:
    """Images in an OCI layout on disk; jobs run by runc from a bundle umoci unpacked."""

    name = "oci"
    label = "the OCI store (umoci + runc)"
    builds = False
    missing_hint = (
        "`capsule import` its export with --engine oci (export it where the image was built: "
        "`capsule export --format oci` or `--with-image`)"
    )

    def __init__(self) -> None:
        self.check()
        self.root = store_root()
        self._check_store()
        self.layout = self.root / "layout"
        self.bundles = self.root / "bundles"
        self.runs = self.root / "runs"

    def check(self) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise EngineMissing(
                f"{' and '.join(missing)}: not installed; run scripts/oci-up.sh "
                "(apt-get install runc umoci)"
            )
        if os.getuid() != 0:
            raise EngineMissing(
                "--on oci runs runc as root; without root, run the capsule's OCI export with "
                "Apptainer (README, 'On a cluster')"
            )

    def _check_store(self) -> None:
        """runc runs as root what the store holds: the store must be root's alone (owned by
        root, writable by no one else), or anyone who can write it could run code as root."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder in (self.root, *(self.root / n for n in ("layout", "bundles", "runs"))):
            if not folder.exists():
                continue
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
                raise BadInput(
                    f"{folder}: the OCI store must be a directory owned by root and writable "
                    f"by no one else ({STORE_ENV} names another)"
                )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's lock: one writer of the index or a bundle at a time."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ------------------------------------------------------------ images

    def has_image(self, ref: str) -> str | None:
        if not ref.startswith("sha256:") or not self.layout.exists():
            return None
        try:
            manifest = image_manifest(self.layout, image_tag(ref))
            if manifest is None or manifest["config"]["digest"] != ref:
                return None
        except (OSError, KeyError, TypeError):  # removed meanwhile, or not an image manifest
            return None
        return ref

    def inspect(self, ref: str) -> ImageInfo | None:
        if self.has_image(ref) is None:
            return None
        try:
            config = json.loads(blob_path(self.layout, ref).read_bytes())
            labels = (config.get("config") or {}).get("Labels") or {}
            return ImageInfo(ref, list(config["rootfs"]["diff_ids"]), dict(labels))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            unreadable = f"{self.layout}: the config of {ref[:19]}… is unreadable"
            raise IntegrityError(unreadable) from None

    def base(self, ref: str | None, log: Log) -> tuple[str, str]:
        raise self._no_build()

    def build(self, context: bytes, tag: str | None, labels: dict[str, str], base_ref: str,
              nocache: bool, log: Log) -> str:  # fmt: skip
        raise self._no_build()

    def _no_build(self) -> BadInput:
        return BadInput(
            "--engine oci runs images but does not build them: build with docker or podman, "
            "then `capsule export --format oci` and `capsule import --engine oci` here"
        )

    def load(self, data: Iterable[bytes]) -> None:
        """A `docker save` archive into the layout, each image tagged by its config digest."""
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.root) as spool:
            for chunk in data:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool) as source:
                member = source.extractfile("manifest.json")
                if member is None:
                    raise BadInput("oci load: the archive has no manifest.json")
                configs = [entry["Config"] for entry in json.loads(member.read())]
                ids = {}
                for name in configs:
                    config = source.extractfile(name)
                    if config is None:
                        raise BadInput(f"oci load: the archive has no {name}")
                    ids[name] = "sha256:" + hashlib.sha256(config.read()).hexdigest()
                if len(ids) != 1:
                    raise BadInput(f"oci load: the archive holds {len(ids)} images, not one")
                image_id = next(iter(ids.values()))
                tag = image_tag(image_id)
                with self._locked():
                    add_saved(self.layout, {tag: source}, {tag: image_id})

    def save(self, image_id: str) -> Iterable[bytes]:
        with tempfile.TemporaryFile(dir=self.root) as f:
            docker_archive(self.layout, image_tag(image_id), f)
            f.seek(0)
            while chunk := f.read(1 << 20):
                yield chunk

    def tag(self, image_id: str, tag: str) -> None:
        """Nothing to do: the store names images by their ID."""

    def remove(self, image_id: str) -> None:
        """Untag the image and drop its bundle; `umoci gc` removes the blobs nothing uses."""
        tag = image_tag(image_id)
        with self._locked():
            entries = read_index(self.layout)
            kept = [e for e in entries if e.get("annotations", {}).get(REF_NAME) != tag]
            if len(kept) != len(entries):
                write_index(self.layout, kept)
                subprocess.run(["umoci", "gc", "--layout", str(self.layout)], capture_output=True)
            shutil.rmtree(self.bundles / tag, ignore_errors=True)

    # ------------------------------------------------------------ run

    def _bundle(self, image_id: str, log: Log) -> Path:
        """The image's runtime bundle, unpacked once (under the store's lock, into a partial
        directory renamed when complete)."""
        bundle = self.bundles / image_tag(image_id)
        if (bundle / "config.json").exists():
            return bundle
        with self._locked():
            if (bundle / "config.json").exists():
                return bundle
            self.bundles.mkdir(parents=True, exist_ok=True, mode=0o700)
            for stale in [*self.bundles.glob(".partial-*"), bundle]:  # killed unpacks
                shutil.rmtree(stale, ignore_errors=True)
            partial = self.bundles / f".partial-{uuid.uuid4().hex[:8]}"
            log(f"oci: unpacking image {image_id[:19]}… into a runtime bundle (once per image)")
            result = subprocess.run(
                [
                    "umoci",
                    "unpack",
                    "--image",
                    f"{self.layout}:{image_tag(image_id)}",
                    str(partial),
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                lines = (result.stderr or result.stdout).strip().splitlines()
                raise EngineMissing(f"umoci unpack failed: {lines[-1] if lines else 'no output'}")
            os.replace(partial, bundle)
        return bundle

    def _config(self, bundle: Path, job: Job) -> dict[str, Any]:
        """The job's runtime config, written here from a fixed template (runc's defaults,
        RUNTIME_MOUNTS…): of the bundle's own config only the image's environment is taken,
        so nothing in the store (hooks, mounts, devices) reaches the container but the image's
        files."""
        try:
            image_env = json.loads((bundle / "config.json").read_text())["process"]["env"]
            image_env = [e for e in image_env if isinstance(e, str)]
        except (OSError, ValueError, KeyError, TypeError):
            raise IntegrityError(f"{bundle}/config.json: unreadable; remove the bundle") from None
        c = confinement()
        uid, _, gid = job.user.partition(":")
        env = [e for e in image_env if e.split("=", 1)[0] not in job.env]
        tmpfs = [
            {"destination": target, "type": "tmpfs", "source": "tmpfs",
             "options": options.split(",")}
            for target, options in c.tmpfs().items()
        ]  # fmt: skip
        binds = [
            {"destination": m.target, "type": "bind", "source": str(m.source.resolve()),
             "options": ["rbind", "rw" if m.writable else "ro", "nosuid", "nodev"]}
            for m in job.mounts
        ]  # fmt: skip
        config: dict[str, Any] = {
            "ociVersion": "1.0.2",
            "process": {
                "terminal": False,
                "user": {"uid": int(uid), "gid": int(gid or uid)},
                "args": job.argv,
                "env": env + [f"{k}={v}" for k, v in job.env.items()],
                "cwd": "/tmp",
                "capabilities": {
                    kind: [f"CAP_{cap}" for cap in c.capabilities]
                    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient")
                },
                "rlimits": [
                    {"type": "RLIMIT_NOFILE", "hard": c.open_files, "soft": c.open_files},
                    {"type": "RLIMIT_NPROC", "hard": c.processes, "soft": c.processes},
                ],
                "noNewPrivileges": c.no_new_privileges,
            },
            "root": {"path": str((bundle / "rootfs").resolve()), "readonly": c.read_only_root},
            "hostname": "capsule",
            "mounts": [*RUNTIME_MOUNTS, *tmpfs, *binds],
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                "resources": {
                    "devices": [{"allow": False, "access": "rwm"}],
                    "memory": {"limit": c.memory_bytes()},
                    "pids": {"limit": c.pids},
                },
                "seccomp": SECCOMP,
                "maskedPaths": MASKED_PATHS,
                "readonlyPaths": READONLY_PATHS,
            },
        }
        if job.gpu:
            gpu(config)
        return config

    def run(self, image_id: str, job: Job, log: Log) -> tuple[int, str]:
        bundle = self._bundle(image_id, log)
        name = job.name or f"capsule-{uuid.uuid4().hex[:12]}"
        self.runs.mkdir(parents=True, exist_ok=True, mode=0o700)
        run_dir = self.runs / name
        if run_dir.exists():  # a run of that name was killed: its container goes first
            self.stop(name)
            shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir()
        try:
            (run_dir / "config.json").write_text(json.dumps(self._config(bundle, job)))
            last = ""
            with subprocess.Popen(
                ["runc", "run", "--bundle", str(run_dir), name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            ) as process:
                assert process.stdout is not None
                for line in process.stdout:
                    if line.strip():
                        last = line.strip()
                        log(line.rstrip("\n"))
            return process.returncode, last
        finally:
            self.stop(name)
            shutil.rmtree(run_dir, ignore_errors=True)

    def stop(self, name: str) -> None:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)


def _read(source: tarfile.TarFile, name: str) -> bytes:
    member = source.extractfile(name)  # KeyError if absent
    if member is None:
        raise BadInput(f"oci load: {name!r} is not a file in the archive")
    return member.read()


def gpu(config: dict[str, Any]) -> None:
    """Give the job the NVIDIA devices and driver libraries as the NVIDIA container toolkit
    does: its OCI prestart hook (which calls nvidia-container-cli) where installed, else the
    host's CDI spec for nvidia.com/gpu=all; neither: EngineMissing (exit 4)."""
    hook = shutil.which(NVIDIA_HOOK)
    env = config["process"]["env"]
    if hook is not None and shutil.which("nvidia-container-cli") is not None:
        env += ["NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"]
        hooks = config.setdefault("hooks", {})
        hooks.setdefault("prestart", []).append({"path": hook, "args": [NVIDIA_HOOK, "prestart"]})
        return
    spec, unread = cdi_spec()
    if spec is None:
        why = f"; {unread}" if unread else ""
        raise EngineMissing(
            "--device cuda with --on oci needs the NVIDIA container toolkit on this host "
            f"({NVIDIA_HOOK} and nvidia-container-cli, or a CDI spec for nvidia.com/gpu in "
            f"{' or '.join(map(str, CDI_DIRS))}){why}: replay with --device cpu"
        )
    try:
        _apply_cdi(config, spec, env)
    except (KeyError, TypeError, ValueError, OSError) as error:
        raise EngineMissing(
            f"the host's CDI spec for nvidia.com/gpu is unusable: {error}"
        ) from None


def _apply_cdi(config: dict[str, Any], spec: dict[str, Any], env: list[str]) -> None:
    """The spec's own edits and those of its device `all` (else of every device it lists)."""
    devices = spec.get("devices") or []
    chosen = [d for d in devices if d.get("name") == "all"] or devices
    edits = [spec.get("containerEdits") or {}, *(d.get("containerEdits") or {} for d in chosen)]
    for edit in edits:
        env += edit.get("env", [])
        for node in edit.get("deviceNodes", []):
            path = node["path"]
            device = os.stat(node.get("hostPath", path)).st_rdev
            kind = node.get("type", "c")
            major, minor = node.get("major", os.major(device)), node.get("minor", os.minor(device))
            linux = config["linux"]
            linux.setdefault("devices", []).append(
                {"path": path, "type": kind, "major": major, "minor": minor, "fileMode": 0o666}
            )
            linux["resources"].setdefault("devices", []).append(
                {"allow": True, "type": kind, "major": major, "minor": minor, "access": "rwm"}
            )
        for mount in edit.get("mounts", []):
            config["mounts"].append(
                {
                    "destination": mount["containerPath"],
                    "type": mount.get("type", "bind"),
                    "source": mount["hostPath"],
                    "options": mount.get("options", ["rbind", "ro", "nosuid"]),
                }
            )
        for hook_spec in edit.get("hooks", []):
            entry = {k: hook_spec[k] for k in ("path", "args", "env") if k in hook_spec}
            stage = hook_spec.get("hookName", "createContainer")
            config.setdefault("hooks", {}).setdefault(stage, []).append(entry)


def cdi_spec() -> tuple[dict[str, Any] | None, str]:
    """The host's CDI spec of kind nvidia.com/gpu (`nvidia-ctk cdi generate` writes one), JSON,
    or YAML where PyYAML is installed; /var/run/cdi before /etc/cdi, as CDI orders them. With
    None, why a spec that is there could not be read ("" if there is none)."""
    unread = ""
    for folder in CDI_DIRS:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.suffix not in (".json", ".yaml", ".yml"):
                continue
            try:
                if path.suffix == ".json":
                    spec = json.loads(path.read_text())
                else:
                    import yaml  # type: ignore[import-untyped]

                    spec = yaml.safe_load(path.read_text())
            except ImportError:
                unread = f"{path} is YAML and PyYAML is not installed (pip install pyyaml)"
                continue
            except Exception as error:
                unread = f"{path} is unreadable ({type(error).__name__})"
                continue
            if isinstance(spec, dict) and spec.get("kind") == "nvidia.com/gpu":
                return spec, ""
    return None, unread
