# The device checks: rkvm.ko loads, /dev/rkvm answers as the 2006 ABI says,
# bad input gets errnos, guest memory maps and unmaps without leaking, and
# the module unloads cleanly.
# Runs in L1 with rkvm.ko, rkvm-devtest and rkvm-run in the working
# directory. The harness sets MAX_STAGE=N first: only the checks and test
# guests of stages 1 to N run (every check of this script itself belongs to
# stage 3). Without MAX_STAGE, everything runs.

ok() { echo "RKVM-CHECK ok $1"; }
fail() { echo "RKVM-CHECK fail $1: $2"; status=1; }
status=0

if insmod ./rkvm.ko; then ok module-loads; else fail module-loads "insmod failed"; exit 1; fi
./rkvm-devtest ${MAX_STAGE:+--max-stage "$MAX_STAGE"} || status=1
if [ -x ./rkvm-run ]; then
	./rkvm-run check ${MAX_STAGE:+--max-stage "$MAX_STAGE"} || status=1
fi

# A file open on /dev/rkvm holds a reference to the module.
exec 3<>/dev/rkvm
if rmmod rkvm 2>/dev/null; then fail rmmod-refused-while-open "rmmod succeeded"; else ok rmmod-refused-while-open; fi
exec 3<&-
if rmmod rkvm; then ok rmmod-after-close; else fail rmmod-after-close "rmmod failed"; fi
if [ -e /dev/rkvm ]; then fail device-gone-after-rmmod "/dev/rkvm still exists"; else ok device-gone-after-rmmod; fi

# Nothing worse than an info line from the kernel.
bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace|general protection|rkvm:.*(error|panic)' | head -n 5)
if [ -z "$bad" ]; then ok dmesg-clean; else fail dmesg-clean "$(echo "$bad" | tr '\n' '|')"; fi
exit $status
