#!/bin/busybox sh
# The guest's init, run by the Linux that rkvm-vmm boots: a banner, a
# fork+exec workload, what it measured, and power off.
#
# Powering off: the kernel has no ACPI, so `poweroff` cannot turn the
# machine off. rkvm-vmm has an exit port at 0xF4 (like QEMU's
# isa-debug-exit): the byte written there is the VMM's exit status.

/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc

# The guest's own clock, in hundredths of a second since it booted.
centiseconds() { tr -d . < /proc/uptime | cut -d' ' -f1; }

echo "RKVM-VMM guest: Linux $(uname -r) reached init after $(cut -d' ' -f1 /proc/uptime) s"
echo "RKVM-VMM guest: $(grep -c ^processor /proc/cpuinfo) CPU, $(grep MemTotal /proc/meminfo | tr -s ' ')"
# The date comes from the VMM's CMOS clock, read once at boot.
echo "RKVM-VMM guest: the CMOS clock says $(date -u '+%Y-%m-%d %H:%M:%S') UTC"

# Hundreds of short processes: each is a fork, an exec of busybox (static)
# and an exit, so the page tables of a new address space are built and
# torn down each time.
count=${RKVM_FORKS:-500}
start=$(centiseconds)
i=0
while [ $i -lt $count ]; do
	/bin/true
	i=$((i + 1))
done
end=$(centiseconds)
elapsed=$((end - start))
per=$((elapsed * 10000 / count))
echo "RKVM-VMM workload: $count fork+exec of /bin/true in $((elapsed / 100)).$(printf %02d $((elapsed % 100))) s (guest clock), $per us each"

status=0
[ $i -eq $count ] || status=1
echo "RKVM-VMM guest: powering off with status $status"
printf "\\00$status" | dd of=/dev/port bs=1 seek=244 2>/dev/null
echo "RKVM-VMM guest: the exit port did not stop the machine"
sleep 1
exit 1
