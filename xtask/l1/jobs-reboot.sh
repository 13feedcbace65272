# Stage 13's reboot check: with a VM running on every CPU, `reboot -f`
# must reach the firmware with every CPU out of VMX or SVM (the module's
# reboot notifier). The job cannot report after the reboot; the harness
# (xtask/src/smp.rs) reads the console instead: the module's line
# "rkvm: reboot: svm off on N CPUs, 0 still on", then the kernel's
# "reboot: Restarting system", then the machine leaving (QEMU runs with
# -no-reboot), with no warning or oops in between.

ok() { echo "RKVM-CHECK ok $1"; }
fail() { echo "RKVM-CHECK fail $1: $2"; status=1; }
status=0
if insmod ./rkvm.ko; then ok reboot/module-loads; else fail reboot/module-loads "insmod failed"; exit 1; fi
ncpus=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)
# One spinning guest per CPU, again and again (`spin` stops after its
# one-second watchdog), each loop pinned to its CPU.
i=0
while [ $i -lt "$ncpus" ]; do
	taskset -c $i sh -c 'while :; do ./rkvm-run spin >/dev/null 2>&1; done' &
	i=$((i + 1))
done
tries=0
while :; do
	sleep 1
	running=$(pidof rkvm-run | wc -w)
	vcpus=$(cat /sys/kernel/debug/rkvm/vcpus)
	[ "$running" -eq "$ncpus" ] && [ "$vcpus" -eq "$ncpus" ] && break
	tries=$((tries + 1))
	[ $tries -ge 10 ] && break
done
if [ "$running" -eq "$ncpus" ] && [ "$vcpus" -eq "$ncpus" ]; then ok reboot/a-vm-spins-on-every-cpu; else
	fail reboot/a-vm-spins-on-every-cpu "$running VM processes, $vcpus vCPUs, for $ncpus CPUs"
fi
# Every kernel message to the console from here on: the module's reboot
# line is at KERN_INFO.
echo 8 >/proc/sys/kernel/printk
echo "RKVM-INFO reboot -f with $running guests spinning on $ncpus CPUs"
reboot -f
sleep 20
echo "RKVM-CHECK fail reboot/machine-restarts: L1 still runs 20 s after reboot -f"
exit 1
