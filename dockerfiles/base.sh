#!/usr/bin/env bash
# Recipe of Capsule's local base image: a minimal Debian bookworm with python3 and venv,
# made without a registry. Usage: base.sh ROOTFS_DIR MIRROR_URL
# The tool tars ROOTFS_DIR with sorted names, mtime 0 and owner 0 and imports it; the image is
# tagged with this file's sha256, so a changed recipe makes a new base. Standard output: the
# date of the package set (the mirror's Release file), which the base's labels record.
set -euo pipefail
rootfs="$1"
mirror="$2"
debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$mirror" >&2
sed -n 's/^Date: //p' "$rootfs"/var/lib/apt/lists/*_Release | head -n 1
# Drop what a replay never needs: package caches and lists, docs, man pages, locales.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
       "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/* \
       "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
find "$rootfs" -name '__pycache__' -type d -prune -exec rm -rf {} +
