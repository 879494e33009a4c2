"""Benchmark: the two ways a base image can travel with a capsule (issue 18), side by side on
one capsule built here with Docker:

- carried (what Capsule does): the engine's `docker save` of the base, zstd, stored in the
  capsule: its size, the time to make it (save + compress, once per capsule) and to read it
  back (decompress, at each rebuild in an engine that lacks the base);
- recovered: the base taken back from the exported image's lowest layer (`images/cpu.tar.gz`
  in an export made with --with-image): nothing stored, the time to find and unpack it.

Also the export's size with and without the carried base. Needs Docker.
Writes benchmarks/results/base-carry.json. Usage: python benchmarks/base_carry.py [SPEC_DIR]
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results_file import write_result

from builder.base_image import compress, decompressed
from builder.engines import open_engine
from builder.store import file_sha256

ROOT = Path(__file__).resolve().parents[1]
CAPSULE = str(Path(sys.executable).parent / "capsule")


def run(*args: str) -> None:
    subprocess.run([CAPSULE, *args], check=True, stdout=subprocess.DEVNULL)


def lowest_layer(image_archive: Path, out: Path) -> int:
    """The lowest layer (the base's) of a gzipped `docker save` archive, written to `out`."""
    with tarfile.open(image_archive, "r:gz") as tar:
        listing = tar.extractfile("manifest.json")
        assert listing is not None
        name = json.loads(listing.read())[0]["Layers"][0]
        data = tar.extractfile(name)
        assert data is not None
        size = 0
        with out.open("wb") as f:
            while chunk := data.read(1 << 20):
                f.write(chunk)
                size += len(chunk)
        return size


def main() -> None:
    spec = ROOT / (sys.argv[1] if len(sys.argv) > 1 else "capsules/numpy-softmax")
    engine = open_engine("docker")
    with tempfile.TemporaryDirectory(prefix="capsule-base-") as tmp:
        work = Path(tmp)
        capsule = work / "c"
        run("freeze", str(spec), "--out", str(capsule))
        run("build", str(capsule))
        manifest = json.loads((capsule / "manifest.json").read_text())
        image = manifest["images"]["cpu"]
        stored = manifest["artifacts"][image["base"]["archive"]]

        started = time.perf_counter()
        raw = sum(len(chunk) for chunk in engine.save(image["base_id"]))
        save_s = time.perf_counter() - started
        started = time.perf_counter()
        compress(engine.save(image["base_id"]), work / "base.zst")
        carry_s = time.perf_counter() - started
        started = time.perf_counter()
        read = sum(len(chunk) for chunk in decompressed(work / "base.zst", raw))
        read_s = time.perf_counter() - started

        export = work / "c.capsule.tar"
        run("export", str(capsule), "--with-image", "--out", str(export))
        with tarfile.open(export) as tar:
            member = tar.extractfile("images/cpu.tar.gz")
            assert member is not None
            (work / "cpu.tar.gz").write_bytes(member.read())
        export_bytes, image_bytes = export.stat().st_size, (work / "cpu.tar.gz").stat().st_size
        started = time.perf_counter()
        layer = lowest_layer(work / "cpu.tar.gz", work / "layer.tar")
        assert f"sha256:{file_sha256(work / 'layer.tar')}" == image["base"]["layers"][0]
        recover_s = time.perf_counter() - started
        subprocess.run(["docker", "rmi", "-f", image["image_id"]], capture_output=True)
    write_result(
        "base-carry",
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "capsule": spec.name,
            "base": image["base_image"],
            "base_save_bytes": raw,
            "base_save_s": save_s,
            "carried": {
                "bytes": stored["size"],
                "make_s (save + zstd)": carry_s,
                "read_s (unzstd)": read_s,
                "read_bytes": read,
            },
            "recovered_from_exported_image": {
                "extra_bytes": 0,
                "layer_bytes": layer,
                "find_and_unpack_s": recover_s,
            },
            "export_with_image_bytes": export_bytes,
            "of_which_image_bytes": image_bytes,
            "of_which_carried_base_bytes": stored["size"],
        },
    )


if __name__ == "__main__":
    main()
