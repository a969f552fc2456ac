#!/usr/bin/env bash
# Stage DALI on the GPU machine, which reaches no package index and receives at most 64 MiB per
# device call (working tree included): the wheels travel in parts, one part per call.
#
#   benchmarks/stage_dali.sh prepare   here: download the wheels pinned in
#                                      benchmarks/dali-wheels.sha256, check them, cut them into
#                                      equal parts .stage/part.K (<= PART_MIB MiB each) with
#                                      their checksums in .stage/parts.sha256
#   benchmarks/stage_dali.sh receive   there, one call per part (carry .stage/part.K and
#                                      .stage/parts.sha256): check the part and copy it to
#                                      $STAGE_DIR, which outlives the call on a warm machine
#   benchmarks/stage_dali.sh install   there, once every part is in: join, check the bundle and
#                                      every wheel, pip install into $PYTHON's environment
#                                      (or --target $STAGE_TARGET), import nvidia.dali
#
# The sequence of device calls and its cost: benchmarks/README.md. Every step prints its time.
# What is staged: DALI 2.4.0 (CUDA 13) and the requirements the GPU image lacks: nvImageCodec
# (DALI's decoders) with nvJPEG 13.0.1.86 (the "mixed" JPEG decoder; the CUDA 13.0 release that
# torch's cuda-toolkit 13.0.2 pins, so it matches the machine's runtime), nvJPEG2000 and nvTIFF
# (without them nvImageCodec logs errors at every start), libcst, optree, nvtx, gast, astunparse,
# makefun. Left out to save a part: nvcomp (28 MB), which DALI requires but loads only when an
# op needs it (inflate, compressed readers; none in fastssl).
#
# Environment: STAGE_DIR (default /tmp/fastssl-dali), PYTHON (default python3), PART_MIB
# (default 60), STAGE_TARGET (install with pip --target there instead; install falls back to
# $STAGE_DIR/site when the environment refuses the install, and writes $STAGE_DIR/env.sh for
# gpu_suite.sh to source).
set -euo pipefail

cd "$(dirname "$0")/.."
MANIFEST=$PWD/benchmarks/dali-wheels.sha256
STAGE=.stage  # git-ignored: never committed, travels only where a call names it in carry
STAGE_DIR=${STAGE_DIR:-/tmp/fastssl-dali}
PYTHON=${PYTHON:-python3}
PART_MIB=${PART_MIB:-60}
CARRY_LIMIT=$((64 * 1024 * 1024))

die() { echo "stage_dali: $*" >&2; exit 1; }
now() { date +%s.%N; }
took() { awk -v a="$2" -v b="$(now)" -v n="$1" 'BEGIN { printf "%-34s %6.2f s\n", n, b - a }'; }
wheels() { awk '{ print $2 }' "$MANIFEST"; }
# the size of what a device call sends besides its carry: tracked + untracked-not-ignored files
tree_bytes() {
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'
}

prepare() {
    local t0 t
    t0=$(now)
    mkdir -p "$STAGE/wheels"
    t=$(now)
    if ! (cd "$STAGE/wheels" && sha256sum --status -c "$MANIFEST" 2>/dev/null); then
        # name==version from each file name (name-version-tags.whl); the device machine's
        # interpreter: CPython 3.12, manylinux x86-64
        local pins=()
        mapfile -t pins < <(wheels | awk -F- '{ print $1 "==" $2 }')
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$STAGE/wheels" "${pins[@]}"
        (cd "$STAGE/wheels" && sha256sum --quiet -c "$MANIFEST") ||
            die "downloaded wheels do not match $MANIFEST"
    fi
    took "download + check wheels" "$t"

    t=$(now)
    local bytes parts
    rm -f "$STAGE"/part.* "$STAGE/parts.sha256"
    # shellcheck disable=SC2046  # one word per wheel file name (names have no spaces)
    tar -cf "$STAGE/bundle.tar" -C "$STAGE/wheels" $(wheels)
    bytes=$(stat -c %s "$STAGE/bundle.tar")
    parts=$(((bytes + PART_MIB * 1024 * 1024 - 1) / (PART_MIB * 1024 * 1024)))
    ((parts <= 10)) || die "$parts parts: raise PART_MIB (part names have one digit)"
    split -n "$parts" -d -a 1 "$STAGE/bundle.tar" "$STAGE/part."
    (cd "$STAGE" && sha256sum part.* bundle.tar >parts.sha256)
    rm "$STAGE/bundle.tar"
    took "bundle + split + checksums" "$t"

    local tree largest
    tree=$(tree_bytes)
    largest=$(stat -c %s "$STAGE"/part.* | sort -n | tail -1)
    ((tree + largest + 4096 < CARRY_LIMIT)) ||
        die "a part ($largest B) + the working tree ($tree B) exceed 64 MiB: lower PART_MIB"
    echo "bundle $bytes B in $parts parts of at most $largest B; working tree $tree B"
    echo "carry lists, one device call each (the call sequence: benchmarks/README.md):"
    for p in "$STAGE"/part.*; do
        echo "  [\"$p\", \"$STAGE/parts.sha256\"]"
    done
    took "prepare total" "$t0"
}

receive() {
    local t p name want got n=0
    t=$(now)
    [[ -f $STAGE/parts.sha256 ]] || die "no $STAGE/parts.sha256 here: carry it with each part"
    mkdir -p "$STAGE_DIR"
    for p in "$STAGE"/part.*; do
        [[ -e $p ]] || continue
        name=$(basename "$p")
        want=$(awk -v n="$name" '$2 == n { print $1 }' "$STAGE/parts.sha256")
        got=$(sha256sum "$p" | cut -d' ' -f1)
        [[ $got == "$want" ]] || die "$p: checksum differs from $STAGE/parts.sha256: carry it again"
        cp "$p" "$STAGE_DIR/$name"
        n=$((n + 1))
    done
    ((n > 0)) || die "no $STAGE/part.* in this call: name one in carry"
    cp "$STAGE/parts.sha256" "$STAGE_DIR/"
    local have missing
    have=$(cd "$STAGE_DIR" && ls part.* | tr '\n' ' ')
    missing=$(cd "$STAGE_DIR" && missing_parts | tr '\n' ' ')
    echo "in $STAGE_DIR: ${have}; still to carry: ${missing:-none}"
    took "receive ($n part(s))" "$t"
}

# in $STAGE_DIR: the parts listed in parts.sha256 that are not there
missing_parts() {
    local p
    for p in $(awk '$2 ~ /^part\./ { print $2 }' parts.sha256); do
        [[ -f $p ]] || echo "$p"
    done
}

install() {
    local t0 t missing target=${STAGE_TARGET:-}
    t0=$(now)
    [[ -f $STAGE_DIR/parts.sha256 ]] || die "nothing staged in $STAGE_DIR: run receive first"
    cd "$STAGE_DIR"
    missing=$(missing_parts | tr '\n' ' ')
    [[ -z $missing ]] || die "parts not staged yet: $missing(carry each with a receive call)"

    t=$(now)
    # shellcheck disable=SC2046  # part names from our own checksum file
    cat $(awk '$2 ~ /^part\./ { print $2 }' parts.sha256) >bundle.tar
    grep ' bundle.tar$' parts.sha256 | sha256sum --quiet -c || die "joined bundle is corrupt"
    took "join + check bundle" "$t"

    t=$(now)
    rm -rf wheels && mkdir wheels
    tar -xf bundle.tar -C wheels && rm bundle.tar
    (cd wheels && sha256sum --quiet -c "$MANIFEST") || die "a wheel differs from $MANIFEST"
    took "unpack + check wheels" "$t"

    t=$(now)
    local pip=("$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
        --disable-pip-version-check)
    local files=()
    mapfile -t files < <(wheels | sed 's|^|wheels/|')
    if [[ -z $target ]] && ! "${pip[@]}" "${files[@]}"; then
        target=$STAGE_DIR/site
        echo "pip could not install into $PYTHON's environment: installing to $target"
    fi
    if [[ -n $target ]]; then
        "${pip[@]}" --target "$target" "${files[@]}"
        # nvImageCodec ships nvidia/__init__.py; without it nvidia/ stays a namespace package
        # that merges with the environment's nvidia/ (torch's CUDA libraries)
        rm -f "$target/nvidia/__init__.py"
        echo "export PYTHONPATH=$target\${PYTHONPATH:+:\$PYTHONPATH}" >"$STAGE_DIR/env.sh"
        export PYTHONPATH=$target${PYTHONPATH:+:$PYTHONPATH}
    fi
    took "pip install" "$t"

    t=$(now)
    "$PYTHON" - <<'EOF'
import importlib.util

import nvidia.dali as dali

plugin = ""
if importlib.util.find_spec("torch") is not None:
    import nvidia.dali.plugin.pytorch  # noqa: F401  (the loader's iterator)

    plugin = " + plugin.pytorch"
print(f"nvidia.dali {dali.__version__}{plugin} imports")
EOF
    took "import check" "$t"
    took "install total" "$t0"
}

case "${1:-}" in
prepare | receive | install) "$1" ;;
*) die "usage: benchmarks/stage_dali.sh prepare|receive|install (see the header)" ;;
esac
