#!/usr/bin/env bash
# The GPU check: on an NVIDIA machine with the CUDA toolkit, builds kred (release) and runs
# every GPU suite on cuda, on opencl through the NVIDIA OpenCL driver and on vulkan through
# the NVIDIA Vulkan driver, then the Gaussian benchmarks; logs go to LOG_DIR.
#
#   tools/gpu-check.sh LOG_DIR
#
# What it needs besides the toolkit: meson, ninja, pkg-config, Check, the OpenCL headers
# and ICD loader, the Vulkan headers and loader and glslc (on Debian and Ubuntu:
# meson ninja-build pkg-config check ocl-icd-opencl-dev opencl-headers libvulkan-dev glslc;
# apt-get installs them when it can). The NVIDIA Vulkan driver also needs the glvnd
# libraries (libglvnd0 libgl1 libglx0 libegl1). A driver that kred cannot open makes its
# suites fail, with the reason in the log; KRED_GPU_CHECK_SKIP="opencl vulkan" leaves
# those groups out. It runs in about 5 minutes on 16 cores; each group is capped
# (KRED_GPU_CHECK_LIMIT seconds, default 240) so that the script always ends.
set -u
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gpu-check.sh LOG_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
jobs=$(nproc 2>/dev/null || echo 4)
limit=${KRED_GPU_CHECK_LIMIT:-240}
skip=" ${KRED_GPU_CHECK_SKIP:-} "
status=0
start=$SECONDS

note() { echo "gpu-check: $*" | tee -a "$out/summary.txt"; }

# The NVIDIA drivers' ICD files, where the driver is mounted but not registered (a
# container): the OpenCL ICD names libnvidia-opencl.so.1, the Vulkan one its JSON.
if [ -z "${OCL_ICD_VENDORS:-}" ] && [ ! -e /etc/OpenCL/vendors/nvidia.icd ]; then
	lib=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl.so.1/ { print $NF; exit }')
	[ -z "$lib" ] && lib=$(find / -xdev -name 'libnvidia-opencl.so.1' 2>/dev/null | head -n 1)
	if [ -n "$lib" ]; then
		mkdir -p "$out/icd"
		echo "$lib" >"$out/icd/nvidia.icd"
		export OCL_ICD_VENDORS=$out/icd
	fi
fi
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
	export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi

{
	date
	nvidia-smi 2>&1 | head -n 20
	nvcc --version 2>&1 | tail -n 2
	gcc --version | head -n 1
	echo "cores: $jobs"
} >"$out/machine.txt" 2>&1

note "building (release)"
if ! { meson setup build-gpu --buildtype=release -Dtest_cache_dir="$PWD/.cache/kred-gpu" \
	-Dpython=disabled >"$out/build.txt" 2>&1 || meson configure build-gpu >>"$out/build.txt" 2>&1; } ||
	! ninja -C build-gpu -j "$jobs" >>"$out/build.txt" 2>&1; then
	note "build failed: see build.txt"
	tail -n 30 "$out/build.txt"
	exit 1
fi
note "built in $((SECONDS - start)) s"
./build-gpu/kred devices >"$out/devices.txt" 2>&1
cat "$out/devices.txt"

# group NAME SUITES...: the suites in parallel, capped at $limit seconds in all.
group() {
	local name=$1 t0=$SECONDS rc
	shift
	case $skip in *" $name "*) note "$name: left out (KRED_GPU_CHECK_SKIP)"; return ;; esac
	timeout -k 10 "$limit" meson test -C build-gpu --no-rebuild --print-errorlogs \
		--num-processes "$jobs" --logbase "$name" "$@" >"$out/$name.txt" 2>&1
	rc=$?
	cp "build-gpu/meson-logs/$name.txt" "$out/$name-log.txt" 2>/dev/null
	grep -E '^ *[0-9]+/[0-9]+ ' "$out/$name.txt" | tee -a "$out/summary.txt"
	if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
		note "$name: stopped after $limit s"
		status=1
	elif [ $rc -ne 0 ]; then
		note "$name: failed (exit $rc): see $name.txt"
		status=1
	fi
	note "$name: $((SECONDS - t0)) s"
}

# cuda: the tables on cuda:0, the CUDA suite (compile matrix, device memory runs, cache),
# and the block-sparse runs and batches (the ranged kr_reduce, one launch)
group cuda cuda conformance-cuda diff-cuda golden-cuda chunk-cuda ranges-cuda
# The same tables through the NVIDIA OpenCL and Vulkan drivers.
group opencl conformance-opencl diff-opencl golden-opencl opencl chunk-opencl ranges-opencl
group vulkan conformance-vulkan diff-vulkan golden-vulkan vulkan chunk-vulkan ranges-vulkan

# The Gaussian benchmarks: kred against its baselines, on each GPU backend.
for b in cuda opencl vulkan; do
	case $skip in *" $b "*) continue ;; esac
	note "bench $b"
	# N = 300,000: kred host, in each case for comparison, takes seconds at that size
	timeout -k 10 "${KRED_GPU_CHECK_BENCH_LIMIT:-120}" ./build-gpu/kred bench --cases "$b" \
		--n 300000 --reps 3 \
		>"$out/bench-$b.txt" 2>&1 ||
		note "bench $b: exit $?"
	tail -n 15 "$out/bench-$b.txt"
done
# High dimensions (the gram tiles of kernels/tiled.cl): k-NN on MNIST's shape, 60,000
# training images and 10,000 queries of 784 values, ArgKMin(10) in float32 on the best
# backend (issue 18's target: under 0.5 s on an H200), and the D = 784 cases against the
# plain loop on the host's cores (D = 4,096 would take the loop minutes).
note "knn_mnist 60000 10000"
timeout -k 10 "${KRED_GPU_CHECK_BENCH_LIMIT:-120}" ./build-gpu/examples/knn_mnist 60000 10000 \
	>"$out/knn-mnist.txt" 2>&1 || note "knn_mnist: exit $?"
tail -n 8 "$out/knn-mnist.txt"
for b in cuda opencl; do
	case $skip in *" $b "*) continue ;; esac
	note "bench highdim $b"
	timeout -k 10 "${KRED_GPU_CHECK_BENCH_LIMIT:-120}" ./build-gpu/kred bench -b "$b" \
		--cases gauss-d784,argkmin-d784 --reps 3 >"$out/bench-highdim-$b.txt" 2>&1 ||
		note "bench highdim $b: exit $?"
	tail -n 6 "$out/bench-highdim-$b.txt"
done
note "done in $((SECONDS - start)) s, status $status"
exit $status
