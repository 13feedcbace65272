# `cargo xtask stress`: load rkvm.ko, run the SMP stress (stress.sh) for
# STRESS_SECONDS, then unload and check that memory came back. Runs in L1
# with rkvm.ko, rkvm-run and stress.sh in the working directory.

ok() { echo "RKVM-CHECK ok $1"; }
fail() { echo "RKVM-CHECK fail $1: $2"; status=1; }
status=0
memfree() {
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
	sed -n 's/^MemFree: *\([0-9]*\) kB/\1/p' /proc/meminfo
}
for c in stress-runs-end-as-they-should stress-cpus-come-and-go stress-leaves-no-vm stress-kernel-log-clean; do
	echo "RKVM-PLAN smp smp/$c"
done
echo "RKVM-PLAN job module-loads"
echo "RKVM-PLAN job rmmod-after-stress"
echo "RKVM-PLAN job memfree-back-after-stress"
free_before=$(memfree)
if insmod ./rkvm.ko; then ok module-loads; else fail module-loads "insmod failed"; exit 1; fi
. ./stress.sh
if rmmod rkvm; then ok rmmod-after-stress; else fail rmmod-after-stress "rmmod failed: $(grep rkvm /proc/modules)"; fi
TOLERANCE_KB=8192
free_after=$(memfree)
tries=0
while [ $((free_after + TOLERANCE_KB)) -lt "$free_before" ] && [ $tries -lt 5 ]; do
	sleep 1
	free_after=$(memfree)
	tries=$((tries + 1))
done
echo "RKVM-INFO MemFree ${free_before} kB before insmod, ${free_after} kB after rmmod (tolerance ${TOLERANCE_KB} kB)"
if [ $((free_after + TOLERANCE_KB)) -ge "$free_before" ]; then ok memfree-back-after-stress; else
	fail memfree-back-after-stress "MemFree fell by $((free_before - free_after)) kB over the stress and rmmod"
fi
exit $status
