#!/bin/sh
# Usage: trim-rootfs.sh ROOTFS
# Turns a `debootstrap --variant=minbase bookworm` tree into the equivalent of debian:bookworm-slim
# before it is imported as a base image: the build machine's apt sources (with -updates and
# -security), the slim image's dpkg excludes and apt settings, no device nodes, nothing copied from
# the build host (resolv.conf, hostname), no downloaded packages, apt lists, docs, man pages, locales.
set -eu
R=${1:?usage: trim-rootfs.sh ROOTFS}
[ -x "$R/usr/bin/dpkg" ] || { echo "trim-rootfs: $R is not a Debian root filesystem" >&2; exit 2; }

if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  rm -f "$R/etc/apt/sources.list"
  grep -v '^#' /etc/apt/sources.list.d/debian.sources > "$R/etc/apt/sources.list.d/debian.sources"
fi

cat > "$R/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat > "$R/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'Acquire::Languages "none";' > "$R/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' > "$R/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'Apt::AutoRemove::SuggestsImportant "false";' > "$R/etc/apt/apt.conf.d/docker-autoremove-suggests"

# container engines mount their own /dev, resolv.conf and hostname
rm -rf "${R:?}"/dev/*
rm -f "$R/etc/resolv.conf" "$R/etc/hostname"
: > "$R/etc/hosts"
rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/var/log/* \
       "$R"/tmp/* "$R"/var/tmp/* "$R"/debootstrap
find "$R/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$R/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/groff/* "$R"/usr/share/lintian/*
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
