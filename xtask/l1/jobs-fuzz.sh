# The fuzz job: load rkvm.ko, run rkvm-fuzz for FUZZ_SECONDS with seed
# FUZZ_SEED, then judge what the kernel saw: no warning, BUG, oops, Rust
# panic, lockup, stall, hung task, KASAN, lockdep or kmemleak report in its
# log; no VM, vCPU or guest page left; rmmod works; MemFree comes back.
# Runs in L1 with rkvm.ko and rkvm-fuzz in the working directory.

ok() { echo "RKVM-CHECK ok $1"; }
fail() { echo "RKVM-CHECK fail $1: $2"; status=1; }
status=0
: "${FUZZ_SECONDS:=60}"

# What in the kernel's log means the module (or the kernel under it) went
# wrong. Lockdep's reports start with one of its "possible ..." or
# "inconsistent ..." lines; the detectors' with theirs.
BAD='WARNING:|BUG:|Oops|Call Trace|general protection|rkvm: Rust panic|soft lockup|hard LOCKUP|rcu.*(stall|detected stalls)|blocked for more than|hung_task|KASAN|UBSAN|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|sleeping function called from invalid context|unreferenced object|Out of memory|invoked oom-killer'

# panics and alive.
. ./procs.sh
# MemFree in kB, after dropping the caches the kernel can drop. With SLUB
# (the debug kernel), every slab cache is shrunk too, which also frees the
# objects KASAN's quarantine holds back (up to a thirty-second of memory).
memfree() {
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
	for cache in /sys/kernel/slab/*/shrink; do echo 1 >"$cache"; done 2>/dev/null
	sed -n 's/^MemFree: *\([0-9]*\) kB/\1/p' /proc/meminfo
}
# The round of the fuzzer that the kernel's log names last before line $1.
round_before() {
	dmesg | head -n "$1" | grep 'rkvm-fuzz: round' | tail -n 1 | sed 's/.*rkvm-fuzz: //'
}

# kmemleak (on the debug kernel) should judge the module alone: what it
# suspects of the kernel before the module loads is set aside.
if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak
	echo "RKVM-INFO kmemleak: $(grep -c 'unreferenced object' /sys/kernel/debug/kmemleak) objects suspected before insmod, set aside"
	echo clear >/sys/kernel/debug/kmemleak
fi
free_before=$(memfree)
if insmod ./rkvm.ko; then ok module-loads; else fail module-loads "insmod failed"; exit 1; fi

limit=$((FUZZ_SECONDS + 180))
before=$(panics)
./rkvm-fuzz --seconds "$FUZZ_SECONDS" ${FUZZ_SEED:+--seed "$FUZZ_SEED"} &
pid=$!
waited=0
stuck=
while alive "$pid"; do
	if [ "$(panics)" != "$before" ]; then
		sleep 2
		alive "$pid" || break
		stuck="a Rust panic in rkvm: $(dmesg | grep -A1 'rkvm: Rust panic' | tail -n 2 | tr '\n' ' ')"
		break
	fi
	if [ "$waited" -ge "$limit" ]; then
		stuck="still running ${limit} s after it started (asked for ${FUZZ_SECONDS} s): a task stuck in rkvm?"
		break
	fi
	sleep 1
	waited=$((waited + 1))
done
if [ -n "$stuck" ]; then
	echo "RKVM-INFO rkvm-fuzz's threads and their kernel stacks:"
	for t in /proc/$pid/task/*; do echo "RKVM-INFO $t: $(cat $t/stat 2>/dev/null | cut -d' ' -f3) $(cat $t/stack 2>/dev/null | head -n 8 | tr '\n' ' ')"; done
	fail fuzz-finished "rkvm-fuzz is $stuck; last round: $(dmesg | grep 'rkvm-fuzz: round' | tail -n 1 | sed 's/.*rkvm-fuzz: //'); replay it with cargo xtask fuzz --seed SEED"
	exit 1
fi
wait "$pid"
rc=$?
case $rc in
0 | 1) ok fuzz-finished ;;
*) fail fuzz-finished "rkvm-fuzz ended with status $rc (above 128: killed by signal $((rc - 128))); its last round: $(dmesg | grep 'rkvm-fuzz: round' | tail -n 1 | sed 's/.*rkvm-fuzz: //')" ;;
esac

left=
for c in vms vcpus guest_pages; do
	v=$(cat /sys/kernel/debug/rkvm/$c)
	[ "$v" = 0 ] || left="$left $c=$v"
done
if [ -z "$left" ]; then ok fuzz-leaves-no-vm; else fail fuzz-leaves-no-vm "with rkvm-fuzz gone, debugfs rkvm/ still counts$left: something holds a VM (a task stuck in rkvm, or a reference never dropped)"; fi

if rmmod rkvm; then ok rmmod-after-fuzz; else fail rmmod-after-fuzz "rmmod failed: the module is still in use (lsmod: $(grep rkvm /proc/modules))"; fi

if [ -e /sys/kernel/debug/kmemleak ]; then
	echo scan >/sys/kernel/debug/kmemleak
	sleep 5
	echo scan >/sys/kernel/debug/kmemleak
	leaks=$(grep -c 'unreferenced object' /sys/kernel/debug/kmemleak)
	if [ "$leaks" = 0 ]; then ok kmemleak-finds-nothing; else
		fail kmemleak-finds-nothing "$leaks unreferenced objects; the first: $(head -n 12 /sys/kernel/debug/kmemleak | tr '\n' '|')"
	fi
fi

# Per-CPU page lists and slab caches make MemFree noisy; a leak of a page
# per VM over the fuzzer's thousands of VMs is well above this.
TOLERANCE_KB=8192
free_after=$(memfree)
tries=0
while [ $((free_after + TOLERANCE_KB)) -lt "$free_before" ] && [ $tries -lt 5 ]; do
	sleep 1
	free_after=$(memfree)
	tries=$((tries + 1))
done
echo "RKVM-INFO MemFree ${free_before} kB before insmod, ${free_after} kB after rmmod (tolerance ${TOLERANCE_KB} kB)"
if [ $((free_after + TOLERANCE_KB)) -ge "$free_before" ]; then ok memfree-back-after-fuzz; else
	fail memfree-back-after-fuzz "MemFree fell by $((free_before - free_after)) kB over the fuzz run and rmmod: guest memory or module allocations leaked; rerun with --debug-kernel (kmemleak) to find them"
fi

first=$(dmesg | grep -nE "$BAD" | head -n 1 | cut -d: -f1)
if [ -z "$first" ]; then ok kernel-log-clean-after-fuzz; else
	fail kernel-log-clean-after-fuzz "$(dmesg | grep -E "$BAD" | head -n 3 | tr '\n' '|') after $(round_before "$first"); replay that round with cargo xtask fuzz --seed SEED and read the whole report in target/l1/fuzz.log"
fi
exit $status
