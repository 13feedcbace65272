# The device checks: rkvm.ko loads, /dev/rkvm answers as the 2006 ABI says,
# bad input gets errnos, guest memory maps and unmaps without leaking, and
# the module unloads cleanly.
# Runs in L1 with rkvm.ko, rkvm-devtest and rkvm-run in the working
# directory. The harness sets MAX_STAGE=N first: only the checks and test
# guests of stages 1 to N run (every check of this script itself belongs to
# stage 3). Without MAX_STAGE, everything runs. With CHAOS_SEEDS=N, the
# seeded guests run with N seeds each too (`cargo xtask test` sets it).
# With GUEST_TIMEOUT=S, a guest that has not stopped after S seconds is
# stopped, instead of after rkvm-run's 10 (the harness sets 30 on Bochs).
# LEAK_VMS=N and PAGING_VMS=N set the VMs of the two leak checks (1,000
# and 200 unless the harness says fewer, as it does on Bochs).
# With PLATFORM=NAME (the harness sets it), rkvm-run leaves out the guests
# whose header says `not-on: NAME`, each announced and reported not run
# with the header's reason (RKVM-INFO guest/GUEST not run: ...).
#
# Before anything runs, the job announces every check it will report when
# all goes well (RKVM-PLAN PART NAME), by parts: the script's own checks
# (job), rkvm-devtest's, rkvm-run's guests, the guests moved between VMs
# while they run (migrate, from stage 11), and the guests on the naive MMU
# with the paging leak check (naive). A part that stops early says why
# (RKVM-STOPPED PART: reason), and the harness lists each announced check
# that never reported as not run, with that reason: an unsolved run counts
# the same checks as a solved one.

ok() { echo "RKVM-CHECK ok $1"; }
fail() { echo "RKVM-CHECK fail $1: $2"; status=1; }
stopped() { echo "RKVM-STOPPED $1: $2"; status=1; }
status=0
max=${MAX_STAGE:-99}

# panics and alive.
. ./procs.sh

# The last Rust panic's message (its two lines, joined: `panicked at
# FILE:LINE:COL: MESSAGE`).
last_panic() {
	dmesg | grep -A1 'rkvm: Rust panic' | tail -n 2 | sed 's/^\[[ 0-9.]*\] //; s/^rkvm: Rust panic: //' |
		tr '\n' ' ' | sed 's/ *$//'
}

# Kills process $1 and every process below it (a part run as `sh -c
# "... | sed ..."` has its program two levels down).
kill_tree() {
	local stat child
	for stat in /proc/[0-9]*/stat; do
		[ "$(sed 's/.*) //' "$stat" 2>/dev/null | cut -d' ' -f2)" = "$1" ] || continue
		child=${stat#/proc/}
		kill_tree "${child%/stat}"
	done
	kill -9 "$1" 2>/dev/null
}

# Runs a program that talks to /dev/rkvm, as part $1 of the plan, and
# waits for it. A Rust panic in the module (an unsolved exercise is a
# `todo!()`) kills the thread that hit it, and only that thread: the
# program's other threads (rkvm-run's timer, which signals the dead thread
# every 50 ms for ever) would keep it, and its open /dev/rkvm, alive. So
# when the kernel log shows a new panic and the program is still there two
# seconds later, it is killed, with the processes below it. A thread killed while holding a lock can
# never finish exiting: a program still there after that is reported
# stopped, stuck, with the panic's message, and so is one still running
# after 240 s. A program that a panic killed, or that ended with a status
# other than 0 (all passed) or 1 (some failed), is reported stopped too.
run_guarded() {
	name=$1
	shift
	before=$(panics)
	"$@" &
	pid=$!
	waited=0
	while alive "$pid"; do
		if [ "$(panics)" != "$before" ]; then
			sleep 2
			alive "$pid" && kill_tree "$pid" && sleep 1
			alive "$pid" || break
			stopped "$name" "stuck after a panic in rkvm: $(last_panic)"
			return 1
		fi
		if [ "$waited" -ge 240 ]; then
			stopped "$name" "still running after 240 s"
			return 1
		fi
		sleep 1
		waited=$((waited + 1))
	done
	wait "$pid"
	rc=$?
	if [ "$(panics)" != "$before" ]; then
		stopped "$name" "killed by a panic in rkvm: $(last_panic)"
	elif [ "$rc" -gt 1 ]; then
		stopped "$name" "ended with status $rc"
	fi
	return "$rc"
}

# The plan. The naive MMU's part exists from stage 09 on (see below).
echo "RKVM-PLAN job module-loads"
./rkvm-devtest --list ${MAX_STAGE:+--max-stage "$MAX_STAGE"} | sed 's/^/RKVM-PLAN rkvm-devtest /'
if [ -x ./rkvm-run ]; then
	./rkvm-run --list ${MAX_STAGE:+--max-stage "$MAX_STAGE"} | awk '{ print "RKVM-PLAN rkvm-run guest/" $1 }'
	./rkvm-run --list ${MAX_STAGE:+--max-stage "$MAX_STAGE"} | awk '$1 ~ /^migrate-/ { print "RKVM-PLAN migrate migrate/" $1 }'
	if [ "$max" -ge 9 ]; then
		./rkvm-run --list ${MAX_STAGE:+--max-stage "$MAX_STAGE"} | awk '$3 >= 8 { print "RKVM-PLAN naive naive/guest/" $1 }'
		./rkvm-run --list ${MAX_STAGE:+--max-stage "$MAX_STAGE"} | awk '$1 ~ /^migrate-/ { print "RKVM-PLAN naive naive/migrate/" $1 }'
		echo "RKVM-PLAN naive paging-vms-leak-nothing"
	fi
fi
if [ -x ./rkvm-run ] && [ -n "$CHAOS_SEEDS" ]; then
	echo "RKVM-PLAN rkvm-run-chaos chaos"
fi
# Stage 13: the SMP stress (stress.sh), with the module loaded.
if [ "$max" -ge 13 ] && [ -x ./rkvm-run ]; then
	for check in stress-runs-end-as-they-should stress-cpus-come-and-go stress-leaves-no-vm stress-kernel-log-clean; do
		echo "RKVM-PLAN smp smp/$check"
	done
fi
for check in rmmod-refused-while-open rmmod-after-close device-gone-after-rmmod dmesg-clean dmesg-nothing-above-info; do
	echo "RKVM-PLAN job $check"
done

log_start=$(dmesg | wc -l)
if insmod ./rkvm.ko; then ok module-loads; else
	fail module-loads "insmod failed"
	why=$(last_panic)
	stopped job "the module did not load${why:+: $why}"
	exit 1
fi
run_guarded rkvm-devtest ./rkvm-devtest ${MAX_STAGE:+--max-stage "$MAX_STAGE"} ${LEAK_VMS:+--leak-vms "$LEAK_VMS"} || status=1
if [ -x ./rkvm-run ]; then
	run_guarded rkvm-run ./rkvm-run check ${MAX_STAGE:+--max-stage "$MAX_STAGE"} ${GUEST_TIMEOUT:+--timeout "$GUEST_TIMEOUT"} ${PLATFORM:+--platform "$PLATFORM"} || status=1
	# From stage 11 on: guests moved to a second VM while they run, with
	# the dirty log (nothing runs before: no guest is selected).
	run_guarded migrate ./rkvm-run migrate ${MAX_STAGE:+--max-stage "$MAX_STAGE"} ${GUEST_TIMEOUT:+--timeout "$GUEST_TIMEOUT"} ${PLATFORM:+--platform "$PLATFORM"} || status=1
fi
# The seeded guests, CHAOS_SEEDS seeds each (when the harness sets it):
# every run must end in a way a guest may end (`rkvm-run chaos`), on VMX
# too, where chaos-mmio-real runs in virtual-8086 mode and 16-bit protected
# mode (100 of its seeds took 33 s of L1's clock under Bochs).
if [ -x ./rkvm-run ] && [ -n "$CHAOS_SEEDS" ]; then
	if run_guarded rkvm-run-chaos sh -c "./rkvm-run chaos ${MAX_STAGE:+--max-stage $MAX_STAGE} --seeds $CHAOS_SEEDS > chaos.out"; then
		ok chaos
	else
		fail chaos "$(grep -m 1 ' failed: ' chaos.out)"
		grep -A 40 -m 1 ' failed: ' chaos.out
	fi
	grep '^rkvm-run chaos (' chaos.out | sed 's/^/RKVM-INFO /'
fi
# From stage 09 on, the naive shadow MMU of stage 08 stays, selected for
# new VMs by the module parameter shadow_cache: the guests that turn paging
# on run once more on it, their checks named naive/guest/NAME.
naive=/sys/module/rkvm/parameters/shadow_cache
if [ -x ./rkvm-run ] && [ "$max" -ge 9 ] && [ ! -w "$naive" ]; then
	stopped naive "the module has no parameter shadow_cache"
elif [ -x ./rkvm-run ] && [ -w "$naive" ]; then
	echo 0 > "$naive"
	# The guests of stages before 08 do not turn paging on: left out.
	unpaged=$(./rkvm-run --list | awk '$3 < 8 { printf "%s,", $1 }')
	run_guarded naive sh -c "./rkvm-run check ${MAX_STAGE:+--max-stage $MAX_STAGE} ${GUEST_TIMEOUT:+--timeout $GUEST_TIMEOUT} ${PLATFORM:+--platform $PLATFORM} --except ${unpaged}none | sed -e 's#^RKVM-CHECK \\([a-z]*\\) guest/#RKVM-CHECK \\1 naive/guest/#' -e 's#^RKVM-INFO guest/#RKVM-INFO naive/guest/#'" || status=1
	run_guarded naive sh -c "./rkvm-run migrate ${MAX_STAGE:+--max-stage $MAX_STAGE} ${GUEST_TIMEOUT:+--timeout $GUEST_TIMEOUT} ${PLATFORM:+--platform $PLATFORM} | sed 's#^RKVM-CHECK \\([a-z]*\\) migrate/#RKVM-CHECK \\1 naive/migrate/#'" || status=1
	echo 1 > "$naive"

	# A VM that ran a paging guest frees every shadow page and reverse-map
	# entry when it goes: PAGING_VMS (200 unless the harness says fewer)
	# VMs run `pae`, half on each MMU; the module's allocations, which
	# count every shadow page and reverse-map block, come back exactly
	# where they were, MemFree within 2 MiB, the VM counters to 0. (What
	# MemFree alone would see, kernel memory held per VM whatever its
	# paging, is rkvm-devtest's leak check, over 1,000 VMs.) With two
	# CPUs, MemFree also moves with the pages each CPU keeps on its own
	# free lists, which it does not count: a round that leaks is run once
	# more, and only a leak, which shows again, fails. With SLUB (the debug
	# kernel), every slab cache is shrunk first, which also frees the
	# objects KASAN's quarantine holds back.
	vms_wanted=${PAGING_VMS:-200}
	free_kb() {
		for cache in /sys/kernel/slab/*/shrink; do echo 1 >"$cache"; done 2>/dev/null
		awk '/^MemFree/ { print $2 }' /proc/meminfo
	}
	# `--repeat N` runs N VMs one after another in one process, each
	# opened on /dev/rkvm, run and closed before the next: the module's
	# close must free it all, not the process's exit (and a process per VM
	# would cost most of this check's time under emulation). The count of
	# runs is the count of the timing lines, and stays short of N when a
	# run fails; what a failing run said is kept in pae.why.
	: >pae.why
	pae_runs() {
		./rkvm-run --repeat "$1" pae >/dev/null 2>pae.err
		rc=$?
		grep -v '^rkvm-run: run ' pae.err >>pae.why
		n=$(grep -c '^rkvm-run: run ' pae.err)
		[ "$rc" -eq 0 ] && echo "$n" || echo $((n > 0 ? n - 1 : 0))
	}
	pae_runs 20 >/dev/null
	allocations() { cat /sys/kernel/debug/rkvm/allocations; }
	# A round leaks when MemFree falls by more than 2 MiB, or when what the
	# module holds from the kernel's allocators (blocks, pages, locks) is
	# not back where it was, exactly.
	leak_round() {
		held=$(allocations)
		before=$(free_kb)
		runs=0
		for mmu in 1 0; do
			echo $mmu > "$naive"
			runs=$((runs + $(pae_runs $((vms_wanted / 2)))))
		done
		echo 1 > "$naive"
		after=$(free_kb)
		now_held=$(allocations)
		echo "RKVM-INFO paging leak check: MemFree $before kB before, $after kB after $runs VMs that ran pae; the module's allocations $held before, $now_held after"
		leaked=""
		[ "$now_held" -ne "$held" ] && leaked="the module's allocations went from $held to $now_held"
		[ $((after + 2048)) -lt "$before" ] && leaked="${leaked:+$leaked and }MemFree fell by $((before - after)) kB"
	}
	leak_round
	if [ "$runs" -eq "$vms_wanted" ] && [ -n "$leaked" ]; then
		first="$leaked"
		leak_round
		[ -n "$leaked" ] && leaked="$first; then $leaked"
	fi
	vms=$(cat /sys/kernel/debug/rkvm/vms)
	if [ "$runs" -ne "$vms_wanted" ]; then fail paging-vms-leak-nothing "only $runs of $vms_wanted runs of pae passed: $(head -n 1 pae.why)"
	elif [ "$vms" -ne 0 ]; then fail paging-vms-leak-nothing "debugfs vms is $vms after the runs"
	elif [ -n "$leaked" ]; then fail paging-vms-leak-nothing "$leaked"
	else ok paging-vms-leak-nothing; fi
fi

# From stage 13: VM processes on every CPU while they move between CPUs,
# CPUs go offline and online and processes are killed (stress.sh, for
# STRESS_SECONDS: 20 unless the harness says otherwise, as it does for a
# student's run of a stage, 10).
if [ "$max" -ge 13 ] && [ -x ./rkvm-run ]; then
	. ./stress.sh
fi

# A file open on /dev/rkvm holds a reference to the module.
exec 3<>/dev/rkvm
if rmmod rkvm 2>/dev/null; then fail rmmod-refused-while-open "rmmod succeeded"; else ok rmmod-refused-while-open; fi
exec 3<&-
if rmmod rkvm; then ok rmmod-after-close; else fail rmmod-after-close "rmmod failed"; fi
if [ -e /dev/rkvm ]; then fail device-gone-after-rmmod "/dev/rkvm still exists"; else ok device-gone-after-rmmod; fi

# The first of $1 (lines), and how many there are: a check's reason. The
# harness shows the kernel's messages apart, after the checks.
first_of() {
	n=$(echo "$1" | wc -l)
	if [ "$n" -gt 1 ]; then echo "$(echo "$1" | head -n 1) (and $((n - 1)) more lines)"; else echo "$1"; fi
}

# No warning, BUG or oops in the whole log.
bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|Call Trace|general protection|rkvm:.*(error|panic)')
if [ -z "$bad" ]; then ok dmesg-clean; else fail dmesg-clean "$(first_of "$bad")"; fi

# Since the module loaded, nothing worse than an info line: no line at
# KERN_NOTICE (5) or above, except the kernel's own note that an unsigned,
# out-of-tree module taints it, its note that the random number
# generator is ready (which comes late in a long job), and the clocksource
# watchdog's note that it skipped a check because reading the clocks took
# too long: under emulation on a loaded two-core host a read can take
# seconds, which says nothing about the module; and the scheduler's note
# that a process pinned to a CPU the SMP stress took offline runs
# elsewhere now, which is what the stress asks for; and the timer core's
# one-time note that a timer interrupt took long (`hrtimer: interrupt
# took N ns`), which under emulation on a busy host means only that the
# emulator's thread was not scheduled.
bad=$(dmesg -r | tail -n +$((log_start + 1)) | grep -E '^<[0-5]>' |
	grep -vE 'taints kernel|module verification failed|crng init done|clocksource: Long readout interval, skipping watchdog check|\(rkvm-run\) no longer affine to cpu|hrtimer: interrupt took [0-9]+ ns')
if [ -z "$bad" ]; then ok dmesg-nothing-above-info; else fail dmesg-nothing-above-info "$(first_of "$bad")"; fi
exit $status
