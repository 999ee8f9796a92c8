#!/usr/bin/env bash
# Checks the operator's OCI image as hack/image builds it, with tar and
# python3 only (no container runtime):
#
#   tests/image/check.sh [ARCHIVE]    # no ARCHIVE: builds it with hack/image
#   tests/image/check.sh --repro      # builds twice (the second time after
#                                     # touching the sources) and compares
#
# It asserts the config (user 65532:65532, entrypoint, cmd, port 8080,
# labels, created time, no history), the one layer (root-owned, fixed mtimes,
# nothing group- or world-writable, /manifold executable, the CA bundle,
# passwd and group naming 65532), that /manifold is a static ELF (no
# PT_INTERP, no DT_NEEDED), and runs the unpacked /manifold --version and
# --help as uid 65532. Not part of hack/test: it needs a release musl build.
set -euo pipefail
shopt -s inherit_errexit
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

build() { # hack/image's output to stderr; prints its last line, the digest
  local log
  log="$(mktemp)"
  "$root/hack/image" "$@" | tee "$log" >&2
  local digest
  digest="$(tail -1 "$log")"
  rm -f "$log"
  [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "check: hack/image printed no digest" >&2; return 1; }
  echo "$digest"
}

archive=""
if [ "${1:-}" = "--repro" ]; then
  first="$(build)"
  find "$root/src" "$root/Cargo.toml" "$root/Cargo.lock" -exec touch {} +
  second="$(build)"
  echo "check: first build  $first"
  echo "check: second build $second (after touching src/, Cargo.toml, Cargo.lock)"
  if [ "$first" != "$second" ]; then
    echo "check: FAIL: the digests differ" >&2
    exit 1
  fi
  echo "check: the digests are equal"
  shift
fi
if [ $# -gt 0 ]; then
  archive="$1"
else
  version="$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
  archive="${CARGO_TARGET_DIR:-$root/target}/image/manifold-$version.oci.tar"
  [ -n "${first:-}" ] || build >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/manifold-image-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/layout" "$work/rootfs"
tar -xf "$archive" -C "$work/layout"

python3 - "$work/layout" "$work/rootfs" <<'EOF'
import json, os, struct, subprocess, sys, tarfile

layout, rootfs = sys.argv[1], sys.argv[2]
failures = []
def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)

def blob(digest):
    algo, hexd = digest.split(":")
    return os.path.join(layout, "blobs", algo, hexd)

index = json.load(open(os.path.join(layout, "index.json")))
check(json.load(open(os.path.join(layout, "oci-layout"))).get("imageLayoutVersion") == "1.0.0", "oci-layout 1.0.0")
check(len(index["manifests"]) == 1, "the index holds one manifest")
desc = index["manifests"][0]
names = desc.get("annotations", {})
check(names.get("io.containerd.image.name") == names.get("org.opencontainers.image.ref.name") != None,
      "the index names the image for containerd and OCI: %s" % names.get("io.containerd.image.name"))
manifest = json.load(open(blob(desc["digest"])))
check(manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json", "OCI manifest")
config = json.load(open(blob(manifest["config"]["digest"])))
c = config["config"]
check(config.get("os") == "linux" and config.get("architecture") == "amd64", "linux/amd64")
check(c.get("User") == "65532:65532", "User 65532:65532: %r" % c.get("User"))
check(c.get("Entrypoint") == ["/manifold"], "Entrypoint [/manifold]: %r" % c.get("Entrypoint"))
check(c.get("Cmd") == ["run", "--admin-address=0.0.0.0:8080"], "Cmd [run --admin-address=0.0.0.0:8080]: %r" % c.get("Cmd"))
check(list(c.get("ExposedPorts", {})) == ["8080/tcp"], "ExposedPorts 8080/tcp: %r" % c.get("ExposedPorts"))
check("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" in c.get("Env", []), "SSL_CERT_FILE set")
labels = c.get("Labels", {})
for key in ("source", "version", "revision", "created"):
    check(labels.get("org.opencontainers.image." + key), "label org.opencontainers.image.%s=%s" % (key, labels.get("org.opencontainers.image." + key)))
check(not any(k.startswith("io.buildah") for k in labels), "no builder-version label")
check(not config.get("history"), "no history")
created = config.get("created")
check(created == labels.get("org.opencontainers.image.created"), "created %s is the source date" % created)

layers = manifest["layers"]
check(len(layers) == 1, "one layer")
mtimes, modes, owners = set(), {}, set()
for layer in layers:
    with tarfile.open(blob(layer["digest"])) as t:
        for m in t.getmembers():
            name = "/" + m.name.lstrip("./").rstrip("/")
            mtimes.add(int(m.mtime))
            owners.add((m.uid, m.gid))
            modes[name] = (m.type, m.mode)
            check(not (m.mode & 0o022), "%s not group- or world-writable (%o)" % (name, m.mode))
check(owners == {(0, 0)}, "all files owned by 0:0: %r" % owners)
check(len(mtimes) == 1, "all mtimes the same: %r" % sorted(mtimes))
for path in ("/manifold", "/etc/passwd", "/etc/group", "/etc/ssl/certs/ca-certificates.crt"):
    check(path in modes, "%s present" % path)
check(modes.get("/manifold", (None, 0))[1] == 0o755, "/manifold mode 0755")
check(not any(p.startswith("/tmp") for p in modes), "no /tmp (nothing writes)")

for layer in layers:
    subprocess.run(["tar", "-xf", blob(layer["digest"]), "-C", rootfs], check=True)
certs = open(os.path.join(rootfs, "etc/ssl/certs/ca-certificates.crt")).read().count("BEGIN CERTIFICATE")
check(certs > 100, "CA bundle with %d certificates" % certs)
passwd = [l.split(":") for l in open(os.path.join(rootfs, "etc/passwd")).read().splitlines()]
check(["nonroot", "x", "65532", "65532"] in [p[:4] for p in passwd], "passwd names nonroot 65532")
group = [l.split(":") for l in open(os.path.join(rootfs, "etc/group")).read().splitlines()]
check(["nonroot", "x", "65532"] in [g[:3] for g in group], "group names nonroot 65532")

# ELF64 little-endian: program headers, then the dynamic section if any.
elf = open(os.path.join(rootfs, "manifold"), "rb").read()
check(elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "ELF64 LE")
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
types, dynamic = [], None
for i in range(phnum):
    p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
    types.append(p_type)
    if p_type == 2:
        dynamic = (p_offset, p_filesz)
check(3 not in types, "no PT_INTERP (static)")
needed = 0
if dynamic:
    for off in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, _ = struct.unpack_from("<qQ", elf, off)
        if tag == 0:
            break
        needed += tag == 1
check(needed == 0, "no DT_NEEDED")
if failures:
    sys.exit("check: %d failed" % len(failures))
EOF

bin="$work/rootfs/manifold"
if command -v file >/dev/null; then echo "file: $(file -b "$bin")"; fi
as_user=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  as_user=(setpriv --reuid 65532 --regid 65532 --clear-groups)
  chmod 0755 "$work" "$work/rootfs"
fi
out="$(cd / && env -i "${as_user[@]}" "$bin" --version)"
echo "ok   /manifold --version${as_user:+ as 65532}: $out"
version="$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
if [ "$out" != "manifold $version" ]; then
  echo "check: FAIL: --version says '$out', Cargo.toml $version" >&2
  exit 1
fi
(cd / && env -i "${as_user[@]}" "$bin" --help >/dev/null) && echo "ok   /manifold --help"
echo "check: $archive passed"
