#!/usr/bin/env bash
# The layers show in the includes (docs/design.md): every project include
# names its file from the repo root ("src/model.h", "io/config.h",
# "tests/check.h"; the build passes -I. only), the libraries stay in their
# layer (MPI in mpi/; HDF5, libyaml, jansson in io/, and in tests that check
# files independently), and only the front ends include src/cli/. Each
# check also runs on a planted bad file, so it is seen to fail.
cd "$(dirname "$0")/.." && source tests/lib.sh
tmp=$(mktemp -d /tmp/fspo-layers.XXXXXX) && trap 'rm -rf "$tmp"' EXIT

# sources ROOT: the C files of the tree at ROOT, relative to it
sources() { (cd "$1" && find src io mpi tests -name '*.[ch]' 2>/dev/null | sort); }

# bare_includes ROOT: project includes that do not name an existing file from ROOT
bare_includes() {
    local f inc
    while read -r f; do
        while read -r inc; do
            [[ -f $1/$inc ]] || echo "$f: \"$inc\""
        done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]+"([^"]+)".*/\1/p' "$1/$f")
    done < <(sources "$1")
}

# misplaced_libs ROOT: library headers outside their layer
misplaced_libs() {
    local f
    while read -r f; do
        case $f in mpi/*) ;; *) grep -HnE '^#[[:space:]]*include[[:space:]]+<mpi\.h>' "$1/$f" ;; esac
        case $f in io/* | tests/*) ;; *) grep -HnE '^#[[:space:]]*include[[:space:]]+<(hdf5|H5[A-Za-z]*|yaml|jansson)\.h>' "$1/$f" ;; esac
        case $f in src/cli/*) ;; *) grep -HnE '^#[[:space:]]*include[[:space:]]+"src/cli/' "$1/$f" ;; esac
    done < <(sources "$1")
}

out=$(bare_includes .)
[[ -z $out ]] && pass "includes name their folder" "$(sources . | wc -l) files" ||
    fail "includes name their folder" "$(head -c 600 <<<"$out")"
out=$(misplaced_libs .)
[[ -z $out ]] && pass "libraries stay in their layer" "MPI in mpi/, HDF5/libyaml/jansson in io/, src/cli/ on top" ||
    fail "libraries stay in their layer" "$(head -c 600 <<<"$out")"

# the checks catch what they are for
mkdir -p "$tmp/src/cli" "$tmp/io"
printf '#include "src/x.h"\n#include "x.h"\n#include "io/gone.h"\n' >"$tmp/src/a.c"
: >"$tmp/src/x.h" && : >"$tmp/src/cli/cli.h"
printf '#include <mpi.h>\n#include <hdf5.h>\n#include "src/cli/cli.h"\n' >"$tmp/src/b.c"
printf '#include <hdf5.h>\n' >"$tmp/io/c.c"
bad=$(bare_includes "$tmp")
[[ $bad == *'src/a.c: "x.h"'* && $bad == *'"io/gone.h"'* && $bad != *'"src/x.h"'* ]] &&
    pass "a bare or dangling include is caught" "$(tr '\n' ' ' <<<"$bad")" ||
    fail "a bare or dangling include is caught" "got: $bad"
bad=$(misplaced_libs "$tmp")
[[ $(grep -c . <<<"$bad") -eq 3 && $bad != *io/c.c* ]] &&
    pass "a library outside its layer is caught" "$(grep -c . <<<"$bad") of 3 planted" ||
    fail "a library outside its layer is caught" "got: $bad"
