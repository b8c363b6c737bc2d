#!/usr/bin/env bash
# Installs kred with libkred_mpi into a temporary prefix and builds the README's MPI example
# against kred-mpi.pc, as a user would; then runs it on two ranks and checks its output.
# usage: install_mpi_check.sh SRC BUILD MPIRUN [MPIRUN OPTIONS...]
set -euo pipefail
src=$1 build=$2 mpirun=$3
shift 3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/root" --no-rebuild >/dev/null
pcdir=$(dirname "$(find "$tmp/root" -name kred-mpi.pc | head -n 1)")
prefix=$(sed -n 's/^prefix=//p' "$pcdir/kred-mpi.pc")
# pkg-config's sysroot would be put before MPI's own paths too: kred's two files are
# pointed at the staged prefix instead, and MPI's are read where they are.
mkdir "$tmp/pc"
for f in kred kred-mpi; do
	sed "s|^prefix=.*|prefix=$tmp/root$prefix|" "$pcdir/$f.pc" > "$tmp/pc/$f.pc"
done
sed -n '/readme-mpi-example: begin/,/readme-mpi-example: end/p' "$src/README.md" | sed '1,2d;$d' | sed '$d' > "$tmp/ex.c"
export PKG_CONFIG_PATH="$tmp/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cc "$tmp/ex.c" -o "$tmp/ex" $(pkg-config --cflags --libs kred-mpi)
libdir=$(dirname "$(find "$tmp/root" -name 'libkred_mpi.so' | head -n 1)")
out=$(LD_LIBRARY_PATH="$libdir" KRED_BACKEND=reference "$mpirun" -np 2 "$@" "$tmp/ex" | sort)
echo "$out"
# x = y = the rank, b = 1: a = exp(0) + exp(-1) on both ranks
expected=$(awk 'BEGIN { for (r = 0; r < 2; r++) printf "rank %d: a = %.6f\n", r, 1 + exp(-1) }')
[ "$out" = "$expected" ] || { echo "expected:"; echo "$expected"; exit 1; }
echo "1 passed, 0 failed"
