# The SMP stress of stage 13: VM processes on every CPU while the
# processes move between CPUs, CPUs go offline and online, and processes
# are killed at random; then the kernel's side is judged. Runs in L1 in
# /rkvm, with rkvm.ko loaded and rkvm-run beside it, for STRESS_SECONDS
# (default 20). Every check is named smp/NAME; `jobs-device.sh` (stage 13)
# and `jobs-stress.sh` (`cargo xtask stress`) run it.
#
# The VM processes are rkvm-run's: `--repeat 5 pae` and `pt-edit` (paging
# guests, shadow pages built and thrown away, a VM each run) and `spin`
# (a guest that never exits on its own, stopped by the runner's one-second
# watchdog: exit status 3). A run killed by the killer ends with 137.
# Anything else is a failed run.

: "${STRESS_SECONDS:=20}"
smp_ok() { echo "RKVM-CHECK ok smp/$1"; }
smp_fail() { echo "RKVM-CHECK fail smp/$1: $2"; status=1; }
: "${status:=0}"

# What in the kernel's log means the module (or the kernel under it) went
# wrong, as the fuzz job judges it.
BAD='WARNING:|BUG:|Oops|Call Trace|general protection|rkvm: Rust panic|soft lockup|hard LOCKUP|rcu.*(stall|detected stalls)|blocked for more than|hung_task|KASAN|UBSAN|possible circular locking|possible recursive locking|inconsistent lock state|suspicious RCU usage|sleeping function called from invalid context|Out of memory|invoked oom-killer|rkvm:.*(error|failed|cannot)'

ncpus=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)
# The CPUs that can go offline (CPU 0 usually cannot).
hotpluggable=$(ls /sys/devices/system/cpu/cpu[0-9]*/online 2>/dev/null | sed 's#.*/cpu\([0-9]*\)/online#\1#' | tr '\n' ' ')
smp_log_start=$(dmesg | wc -l)
end=$(($(date +%s) + STRESS_SECONDS))
out=/tmp/smp-stress
rm -rf "$out"
mkdir -p "$out"
echo "RKVM-INFO smp stress: $ncpus CPUs (hotpluggable: ${hotpluggable:-none}), ${STRESS_SECONDS} s"

# Workers: two per CPU, each running VM processes one after the other.
worker() {
	while [ "$(date +%s)" -lt "$end" ]; do
		for guest in pae pt-edit spin; do
			case $guest in
			pae) ./rkvm-run --repeat 5 pae >/dev/null 2>&1 ;;
			spin) ./rkvm-run --timeout 1 spin >/dev/null 2>&1 ;;
			*) ./rkvm-run "$guest" >/dev/null 2>&1 ;;
			esac
			echo "$guest $?" >>"$out/runs.$1"
		done
	done
}
i=0
while [ $i -lt $((ncpus * 2)) ]; do
	worker $i &
	i=$((i + 1))
done

# A random VM process, if one runs.
victim() { pidof rkvm-run | tr ' ' '\n' | grep . | shuf -n 1; }
# A random CPU that is online.
online_cpu() { cut -d- -f1- /sys/devices/system/cpu/online | tr ',' '\n' | while IFS=- read a b; do seq "$a" "${b:-$a}"; done | shuf -n 1; }

# The mover: every 0.1 s, a VM process to a random online CPU.
(
	while [ "$(date +%s)" -lt "$end" ]; do
		p=$(victim)
		c=$(online_cpu)
		[ -n "$p" ] && [ -n "$c" ] && taskset -p -c "$c" "$p" >/dev/null 2>&1 && echo >>"$out/moves"
		sleep 0.1
	done
) &
# Hotplug: every second, a random hotpluggable CPU offline, then online.
# (Waited for apart: a panic in the module's hotplug callback, an
# unsolved E13.1 say, leaves the write to `online` stuck for good.)
(
	while [ -n "$hotpluggable" ] && [ "$(date +%s)" -lt "$end" ]; do
		c=$(echo $hotpluggable | tr ' ' '\n' | shuf -n 1)
		if echo 0 >"/sys/devices/system/cpu/cpu$c/online"; then
			echo >>"$out/offline"
			sleep 0.5
			if echo 1 >"/sys/devices/system/cpu/cpu$c/online"; then echo >>"$out/online"; else echo "cpu$c" >>"$out/online-failed"; fi
		else
			echo "cpu$c" >>"$out/offline-failed"
		fi
		sleep 0.5
	done
) &
hotplug_pid=$!
# The killer: every 0.7 s, SIGKILL to a random VM process.
(
	while [ "$(date +%s)" -lt "$end" ]; do
		p=$(victim)
		[ -n "$p" ] && kill -9 "$p" 2>/dev/null && echo >>"$out/kills"
		sleep 0.7
	done
) &
waited=0
while [ -n "$(sed 's/.*) //' "/proc/$hotplug_pid/stat" 2>/dev/null | cut -d' ' -f1 | grep -v Z)" ]; do
	if [ "$waited" -ge $((STRESS_SECONDS + 60)) ] || dmesg | tail -n +$((smp_log_start + 1)) | grep -q 'rkvm: Rust panic'; then
		sleep 2
		why=$(dmesg | grep -A1 'rkvm: Rust panic' | tail -n 2 | sed 's/^\[[ 0-9.]*\] //' | tr '\n' ' ')
		echo "RKVM-STOPPED smp: a CPU's hotplug is stuck${why:+ after a panic in rkvm: $why}"
		echo "RKVM-STOPPED job: CPU hotplug is stuck, and rmmod would wait for it"
		exit 1
	fi
	sleep 1
	waited=$((waited + 1))
done
wait
for c in $hotpluggable; do echo 1 >"/sys/devices/system/cpu/cpu$c/online" 2>/dev/null; done

count() { cat "$out"/$1 2>/dev/null | wc -l; }
runs=$(count 'runs.*')
good=$(cat "$out"/runs.* 2>/dev/null | grep -cE '^(pae 0|pt-edit 0|spin 3|[a-z-]+ 137)$')
killed=$(cat "$out"/runs.* 2>/dev/null | grep -c ' 137$')
echo "RKVM-INFO smp stress: $runs VM processes ($killed killed), $(count moves) moves between CPUs, $(count offline) CPUs offline and $(count online) online again, $(count kills) kills"
bad_runs=$(cat "$out"/runs.* 2>/dev/null | grep -vE '^(pae 0|pt-edit 0|spin 3|[a-z-]+ 137)$' | sort | uniq -c | tr '\n' ';')
if [ "$runs" -gt 0 ] && [ "$good" -eq "$runs" ]; then smp_ok stress-runs-end-as-they-should; else
	smp_fail stress-runs-end-as-they-should "$((runs - good)) of $runs runs ended otherwise (guest status count: $bad_runs)"
fi
if [ -z "$hotpluggable" ]; then
	# L1's small kernel has no ACPI and learns its CPUs from the firmware's
	# MP table, which under QEMU lists one processor whatever -smp says;
	# Bochs's lists them all. Not a failure of the module: not run.
	echo "RKVM-STOPPED smp: L1 has $ncpus CPU and none can go offline (under QEMU, L1's kernel sees one CPU: the firmware's MP table lists one; bochs-vmx has two)"
elif [ "$(count offline)" -eq 0 ] || [ -s "$out/online-failed" ] || [ -s "$out/offline-failed" ]; then
	smp_fail stress-cpus-come-and-go "$(count offline) offline, $(count online) online; failed: $(cat "$out"/online-failed "$out"/offline-failed 2>/dev/null | tr '\n' ' ')"
elif [ "$(cat /sys/devices/system/cpu/online)" != "0-$((ncpus - 1))" ]; then
	smp_fail stress-cpus-come-and-go "online after the run: $(cat /sys/devices/system/cpu/online)"
else smp_ok stress-cpus-come-and-go; fi
on=$(dmesg | tail -n +$((smp_log_start + 1)) | grep -c 'rkvm: .*CPU [0-9]*: [0-9]* active VMCS cleared')
[ "$on" -gt 0 ] && echo "RKVM-INFO smp stress: $on times a CPU going offline VMCLEARed VMCSs active there"
left=
for c in vms vcpus guest_pages; do
	v=$(cat /sys/kernel/debug/rkvm/$c)
	[ "$v" = 0 ] || left="$left $c=$v"
done
if [ -z "$left" ]; then smp_ok stress-leaves-no-vm; else smp_fail stress-leaves-no-vm "debugfs rkvm/ still counts$left"; fi
bad=$(dmesg | tail -n +$((smp_log_start + 1)) | grep -E "$BAD")
if [ -z "$bad" ]; then smp_ok stress-kernel-log-clean; else
	smp_fail stress-kernel-log-clean "$(echo "$bad" | head -n 3 | tr '\n' '|')"
fi
