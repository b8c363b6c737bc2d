#!/usr/bin/env bash
# The two quick-start commands of the README: installs what is missing (Debian/Ubuntu),
# builds, then runs the demo (`setup.sh demo`) or the whole test suite (`setup.sh test`).
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-demo}
case "$mode" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

# What kred builds and tests with (see DEPENDENCIES in the README). The GPU stacks are
# loaded at run time, so each is optional for a user; CI installs all of them. Open MPI
# is for libkred_mpi, built when an MPI is found ("On a cluster" in the README).
# The Python package (python/) is built for Debian's python3 with its numpy and torch;
# clang and its runtime build the libFuzzer harnesses (tests/fuzz).
packages="gcc libc6-dev meson ninja-build pkg-config check python3
  opencl-headers ocl-icd-opencl-dev pocl-opencl-icd clinfo
  libvulkan-dev mesa-vulkan-drivers glslc libshaderc-dev
  libopenmpi-dev openmpi-bin
  python3-dev python3-pip python3-mesonpy python3-numpy python3-torch python3-pytest
  clang libclang-rt-14-dev"
if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

jobs=$(nproc 2>/dev/null || echo 2)
build() { # build DIR [meson options...]
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" >/dev/null
	elif [ $# -gt 0 ]; then
		meson configure "$dir" "$@" >/dev/null
	fi
	# ninja prints compiler errors on stdout: keep them, and show them if it fails.
	local log
	if ! log=$(ninja -C "$dir" -j "$jobs" 2>&1); then
		printf '%s\n' "$log" | tail -n 40 >&2
		echo "setup: the build in $dir failed" >&2
		return 1
	fi
}

# Debian's own interpreter, where apt put numpy and torch: on some machines the first
# python3 on PATH is another one (pyenv's) without them.
py=/usr/bin/python3

# Installs the Python package for $py with pip (pyproject.toml: meson-python builds the
# package alone), so that `import kred.torch` works anywhere. Debian marks its python as
# externally managed: --break-system-packages lets pip install into /usr/local.
install_python() {
	echo "setup: installing the Python package for $py"
	PIP_ROOT_USER_ACTION=ignore $sudo "$py" -m pip install -q --no-build-isolation \
		--break-system-packages .
	(cd / && "$py" -c 'import kred.torch')
}

if [ "$mode" = demo ]; then
	build build "-Dpython_exe=$py"
	install_python
	exec ./build/examples/gaussian_demo
fi

# The test suites run twice: an optimised build, then one under ASan and UBSan (which
# also catches leaks). Compiled kernels are shared within each run through the cache.
# strict_tests: every device stack was installed above, so a suite that finds no device,
# or a backend whose headers are missing, fails the run instead of skipping.
status=0
opts=("-Dtest_cache_dir=$PWD/.cache/kred-test" -Dstrict_tests=true "-Dpython_exe=$py")
# Every suite runs, the CUDA compile matrix whole (KRED_TEST_CUDA_STRIDE=N compiles
# every Nth source only, for a quick look).
build build "${opts[@]}"
install_python
meson test -C build --print-errorlogs --num-processes "$jobs" || status=1
if [ "${KRED_SKIP_SANITIZERS:-}" != 1 ]; then
	# Under the sanitizers: the core and the host backend (the GPU backends ran
	# above; through ASan their tables would take too long on 2 cores).
	build build-asan "${opts[@]}" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	asan_tests=$(meson test -C build-asan --list --no-rebuild 2>/dev/null | grep -xE \
		'parse|api|eval|golden|diff|cli|kernel_product|conformance-host|golden-host|cuda-no-toolkit|chunk-host|comm|threads-host|threads-reference|cluster|ranges-host')
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C build-asan --print-errorlogs --num-processes "$jobs" $asan_tests || status=1
	# Under ThreadSanitizer: eight threads sharing a context (kred.h, "Threads"), and the
	# core and host suites.
	build build-tsan "${opts[@]}" -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
	TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan --print-errorlogs \
		--num-processes "$jobs" threads-host threads-reference parse api eval golden-host ||
		status=1
	# The libFuzzer harnesses (tests/fuzz, clang, ASan and UBSan): each replays its
	# committed corpus, then fuzzes for 20 seconds. (The ASan build above leaves the
	# corpora to this one: the optimised build replays them too.)
	CC=clang build build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false
	meson test -C build-fuzz --print-errorlogs || status=1
fi
sanitizer_dirs="build-asan build-tsan build-fuzz"
[ "${KRED_SKIP_SANITIZERS:-}" = 1 ] && sanitizer_dirs=
python3 tools/test_summary.py --strict build $sanitizer_dirs || status=1
exit $status
